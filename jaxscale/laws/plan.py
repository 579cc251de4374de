"""From a fitted law to decisions: compute-optimal allocation, budgets, inference-aware sizing.

Compute-optimal allocation under C = 6ND for L = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 4):
a = β/(α+β), b = α/(α+β), G = (αA/(βB))^(1/(α+β)), N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jaxscale.errors import UserError
from jaxscale.laws.forms import Chinchilla, Law
from jaxscale.laws.spec import x64

# Dense bf16/fp16 peaks, TFLOP/s, no sparsity (vendor data sheets; ../shared/REFERENCE.md).
GPU_PEAK_TFLOPS: dict[str, float] = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "RTX4090": 165.0,
    "M3Max": 14.0,
}

# (name, parameters, training tokens) as published.
WELL_KNOWN_MODELS: list[tuple[str, float, float]] = [
    ("GPT-3 175B", 175e9, 300e9),  # Brown et al. 2020
    ("Gopher 280B", 280e9, 300e9),  # Rae et al. 2021
    ("Chinchilla 70B", 70e9, 1.4e12),  # Hoffmann et al. 2022
    ("LLaMA-1 7B", 6.7e9, 1.0e12),  # Touvron et al. 2023a
    ("LLaMA-1 65B", 65.2e9, 1.4e12),
    ("LLaMA-2 70B", 70e9, 2.0e12),  # Touvron et al. 2023b
    ("LLaMA-3 8B", 8e9, 15e12),  # Meta 2024
    ("LLaMA-3 70B", 70e9, 15e12),
]


@dataclass(frozen=True)
class Allocation:
    """The compute-optimal model at budget C (FLOPs) under C = 6ND.

    Attributes:
      C, N_opt, D_opt, loss: budget, parameters, tokens and the law's predicted loss there.
      tokens_per_param: D_opt / N_opt.
      a, b, G: N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b.
    """

    C: float
    N_opt: float
    D_opt: float
    tokens_per_param: float
    loss: float
    a: float
    b: float
    G: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compute_optimal(law: Chinchilla, C: float) -> Allocation:
    """N_opt, D_opt and the loss at budget C from a Chinchilla law (closed form, eq. 4 of
    Hoffmann et al. 2022).

    Example:
      >>> al = compute_optimal(load_law("chinchilla"), 1e18)        # doctest: +SKIP
      >>> f"{al.N_opt:.2g} {al.D_opt:.2g}"                            # doctest: +SKIP
      '8.1e+07 2.1e+09'
    """
    if not isinstance(law, Chinchilla):
        raise UserError(
            f"compute-optimal allocation needs a Chinchilla law, not {type(law).__name__}"
        )
    p = law.params
    E, A, B, alpha, beta = p["E"], p["A"], p["B"], p["alpha"], p["beta"]
    if min(A, B, alpha, beta) <= 0:  # else G is complex or the optimum lies at N = 0 or inf
        raise UserError(f"compute-optimal allocation needs A, B, alpha, beta > 0; the law has {p}")
    if not (math.isfinite(C) and C > 0):
        raise UserError(f"a compute budget must be a positive number of FLOPs, not {C}")
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n, d = G * (C / 6) ** a, (C / 6) ** b / G
    try:
        loss = E + A / n**alpha + B / d**beta
    except (ZeroDivisionError, OverflowError):  # e.g. C = 5e-324: N_opt underflows to 0
        raise UserError(
            f"a budget of {C:.3g} FLOPs puts N_opt = {n:.3g} and D_opt = {d:.3g} past floating "
            "point under this law: give a budget in range"
        ) from None
    return Allocation(C, n, d, d / n, loss, a, b, G)


def predict_loss(law: Law, N: Any, D: Any, U: Any = None) -> np.ndarray:
    """The law's loss at (N, D) as float64 NumPy (evaluated under float64).

    A law of N, D and unique tokens U (``DataConstrained``) is given ``U``, by default D: no
    token repeated. Other laws take no U.
    """
    args = [np.asarray(v, dtype=np.float64) for v in (N, D)]
    if "U" in law.variables:
        args.append(args[1] if U is None else np.asarray(U, dtype=np.float64))
    elif U is not None:
        raise UserError(f"a {type(law).__name__} law takes no unique-token count U")
    with x64():
        return np.asarray(law(*args))


def isoflop_profile(law: Law, C: float, n_opt: float, n: int = 9) -> list[dict[str, float]]:
    """Predicted loss along the IsoFLOP curve at C for N from 0.1× to 10× ``n_opt`` (log-spaced)."""
    rows = []
    for f in np.logspace(-1, 1, n):
        N = f * n_opt
        D = C / (6 * N)
        loss = float(predict_loss(law, N, D))
        rows.append({"factor": float(f), "N": float(N), "D": float(D), "loss": loss})
    return rows


def budget_flops(gpu: str, gpus: int, hours: float, mfu: float = 0.4) -> float:
    """Training FLOPs a cluster delivers: peak × MFU × GPUs × seconds.

    Raises:
      UserError: an unknown GPU (the message lists the known ones).
    """
    key = {k.lower(): k for k in GPU_PEAK_TFLOPS}.get(gpu.lower())
    if key is None:
        raise UserError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_PEAK_TFLOPS)}")
    return GPU_PEAK_TFLOPS[key] * 1e12 * mfu * gpus * hours * 3600


def inference_optimal(law: Chinchilla, C: float, inference_tokens: float) -> dict[str, float]:
    """Sardana et al. 2023: minimise 6ND + 2N·D_inf subject to reaching the loss of the
    compute-optimal model at C (solved numerically, 1-D over log N).

    Along the constraint D(N) = (B / (L* - E - A/N^α))^(1/β), defined for N > (A/(L* - E))^(1/α).

    Returns:
      ``N``, ``D``, ``train_flops``, ``inference_flops``, ``total_flops`` of the optimum and the
      ``compute_optimal_total`` for comparison.
    """
    opt = compute_optimal(law, C)
    p = law.params
    E, A, B, alpha, beta = p["E"], p["A"], p["B"], p["alpha"], p["beta"]
    target = opt.loss

    def tokens(log_n: float) -> float:
        slack = target - E - A / math.exp(alpha * log_n)
        return (B / slack) ** (1 / beta) if slack > 0 else math.inf

    def total(log_n: float) -> float:
        n = math.exp(log_n)
        return 6 * n * tokens(log_n) + 2 * n * inference_tokens

    from scipy.optimize import minimize_scalar  # only here: scipy takes a while to import

    lo = math.log((A / (target - E)) ** (1 / alpha)) + 1e-9
    res = minimize_scalar(
        total, bounds=(lo, math.log(opt.N_opt)), method="bounded", options={"xatol": 1e-10}
    )
    n = math.exp(res.x)
    d = tokens(res.x)
    return {
        "N": n,
        "D": d,
        "loss": target,
        "train_flops": 6 * n * d,
        "inference_flops": 2 * n * inference_tokens,
        "total_flops": 6 * n * d + 2 * n * inference_tokens,
        "compute_optimal_total": C + 2 * opt.N_opt * inference_tokens,
    }


def compare_models(law: Law) -> list[dict[str, Any]]:
    """Well-known models with their tokens per parameter and the law's predicted loss."""
    return [
        {
            "model": name,
            "N": n,
            "D": d,
            "tokens_per_param": d / n,
            "C": 6 * n * d,
            "loss": float(predict_loss(law, n, d)),
        }
        for name, n, d in WELL_KNOWN_MODELS
    ]
