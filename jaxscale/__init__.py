"""jaxscale: train small-GPT ladders and fit scaling laws on one machine, in JAX.

The pipeline, one module per stage: config -> data -> model (+ counting) -> train -> sweep ->
results -> laws -> report. Fitted laws are JAX pytrees:

    >>> import jaxscale
    >>> law = jaxscale.load_law("chinchilla")
    >>> round(float(law(70e9, 1.4e12)), 3)
    1.937
"""

from jaxscale.config import ConfigError, EvalConfig, RunSpec, SweepConfig, TrainConfig, load_config
from jaxscale.counting import (
    PRESETS,
    ModelShape,
    flops_per_token_6n,
    flops_per_token_counted,
    non_embedding_params,
    param_counts,
    total_params,
)
from jaxscale.data import Corpus, DataError, get_tokenizer, load_corpus
from jaxscale.errors import UserError
from jaxscale.laws import (
    Chinchilla,
    Coverage,
    FitResult,
    Kaplan,
    KaplanC,
    KaplanD,
    KaplanN,
    OffsetPower,
    TestTime,
    compute_optimal,
    fit_chinchilla,
    fit_coverage,
    fit_envelope,
    fit_isoflop,
    fit_kaplan,
    fit_power,
    fit_test_time,
    load_law,
    save_laws,
)
from jaxscale.model import init_model, loss_fn
from jaxscale.report import write_report
from jaxscale.results import load_results, read_records
from jaxscale.sweep import run_sweep
from jaxscale.train import train_run

__all__ = [
    "PRESETS",
    "Chinchilla",
    "ConfigError",
    "Corpus",
    "Coverage",
    "DataError",
    "EvalConfig",
    "FitResult",
    "Kaplan",
    "KaplanC",
    "KaplanD",
    "KaplanN",
    "ModelShape",
    "OffsetPower",
    "RunSpec",
    "SweepConfig",
    "TestTime",
    "TrainConfig",
    "UserError",
    "compute_optimal",
    "fit_chinchilla",
    "fit_coverage",
    "fit_envelope",
    "fit_isoflop",
    "fit_kaplan",
    "fit_power",
    "fit_test_time",
    "flops_per_token_6n",
    "flops_per_token_counted",
    "get_tokenizer",
    "init_model",
    "load_config",
    "load_corpus",
    "load_law",
    "load_results",
    "loss_fn",
    "non_embedding_params",
    "param_counts",
    "read_records",
    "run_sweep",
    "save_laws",
    "total_params",
    "train_run",
    "write_report",
]
