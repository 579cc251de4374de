"""jaxscale: train small-GPT ladders and fit scaling laws on one machine, in JAX.

The pipeline, one module per stage: config -> data -> model (+ counting) -> train -> sweep ->
results -> laws -> report. Fitted laws are JAX pytrees:

    >>> import jaxscale
    >>> law = jaxscale.load_law("chinchilla")
    >>> round(float(law(70e9, 1.4e12)), 3)
    1.937

The public names below are imported on first use (PEP 562), so that ``import jaxscale`` and the
command line's help do not pay for JAX, Flax and matplotlib before a command needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

# module -> the public names it provides, re-exported here.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "jaxscale.analysis": ("SweepAnalysis", "analyse"),
    "jaxscale.config": (
        "ConfigError",
        "EvalConfig",
        "RunSpec",
        "SweepConfig",
        "TTCConfig",
        "TrainConfig",
        "load_config",
    ),
    "jaxscale.counting": (
        "PRESETS",
        "ModelShape",
        "flops_per_token_6n",
        "flops_per_token_counted",
        "non_embedding_params",
        "param_counts",
        "params_with_head",
        "total_params",
    ),
    "jaxscale.data": ("Corpus", "DataError", "get_tokenizer", "load_corpus"),
    "jaxscale.errors": ("UserError",),
    "jaxscale.laws": (
        "Chinchilla",
        "ConstrainedAllocation",
        "Coverage",
        "DataConstrained",
        "FitResult",
        "Kaplan",
        "KaplanC",
        "KaplanD",
        "KaplanN",
        "OffsetPower",
        "TestTime",
        "compute_optimal",
        "constrained_optimal",
        "fit_chinchilla",
        "fit_coverage",
        "fit_data_constrained",
        "fit_envelope",
        "fit_isoflop",
        "fit_kaplan",
        "fit_power",
        "fit_test_time",
        "load_law",
        "save_laws",
    ),
    "jaxscale.estimators": ("edit_distance", "maj_at_k", "maj_at_ks", "pass_at_k"),
    "jaxscale.model": ("init_model", "loss_fn", "span_mask"),
    "jaxscale.sample": ("cached_forward", "decode_speed", "generate"),
    "jaxscale.seeds": ("SeedsAnalysis", "compare_seeds"),
    "jaxscale.tasks": ("Problem", "Task"),
    "jaxscale.ttc_eval": ("evaluate_problems", "load_final_params", "summarize"),
    "jaxscale.ttc_lab": ("run_ttc",),
    "jaxscale.report": ("write_report",),
    "jaxscale.results": ("load_results", "read_records"),
    "jaxscale.sweep": ("run_sweep",),
    "jaxscale.tables": ("Table", "read_table"),
    "jaxscale.train": ("train_run",),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME, key=lambda name: (not name.isupper(), name))


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once; later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
