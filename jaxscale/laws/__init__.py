"""Scaling laws: forms as pytrees, robust fitting (approaches 1-3), planning, test-time compute,
and data-constrained scaling."""

from jaxscale.laws.constrained import (
    DATA_CONSTRAINED,
    ConstrainedAllocation,
    DataConstrained,
    constrained_optimal,
    fit_data_constrained,
)
from jaxscale.laws.envelope import EnvelopeResult, curves_from_records, fit_envelope
from jaxscale.laws.fit import fit_chinchilla, fit_form, fit_kaplan, fit_power
from jaxscale.laws.forms import (
    BUILTINS,
    Chinchilla,
    Coverage,
    Kaplan,
    KaplanC,
    KaplanD,
    KaplanN,
    Law,
    OffsetPower,
    TestTime,
    law_from_dict,
    load_law,
    save_laws,
)
from jaxscale.laws.isoflop import IsoFlopResult, Profile, fit_isoflop
from jaxscale.laws.plan import (
    GPU_PEAK_TFLOPS,
    WELL_KNOWN_MODELS,
    Allocation,
    budget_flops,
    compare_models,
    compute_optimal,
    inference_optimal,
    isoflop_profile,
    predict_loss,
)
from jaxscale.laws.result import FitResult
from jaxscale.laws.solver import Solver
from jaxscale.laws.spec import CHINCHILLA, KAPLAN, POWER, Spec, x64
from jaxscale.laws.ttc import compute_trade, fit_coverage, fit_test_time

__all__ = [
    "BUILTINS",
    "CHINCHILLA",
    "DATA_CONSTRAINED",
    "GPU_PEAK_TFLOPS",
    "KAPLAN",
    "POWER",
    "WELL_KNOWN_MODELS",
    "Allocation",
    "Chinchilla",
    "ConstrainedAllocation",
    "Coverage",
    "DataConstrained",
    "EnvelopeResult",
    "FitResult",
    "IsoFlopResult",
    "Kaplan",
    "KaplanC",
    "KaplanD",
    "KaplanN",
    "Law",
    "OffsetPower",
    "Profile",
    "Solver",
    "Spec",
    "TestTime",
    "budget_flops",
    "compare_models",
    "compute_optimal",
    "compute_trade",
    "constrained_optimal",
    "curves_from_records",
    "fit_chinchilla",
    "fit_coverage",
    "fit_data_constrained",
    "fit_envelope",
    "fit_form",
    "fit_isoflop",
    "fit_kaplan",
    "fit_power",
    "fit_test_time",
    "inference_optimal",
    "isoflop_profile",
    "law_from_dict",
    "load_law",
    "predict_loss",
    "save_laws",
    "x64",
]
