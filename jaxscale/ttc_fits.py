"""The test-time compute fits of a ladder: coverage per model, Accuracy(N, T), the train/test
trade, and the "smaller model with more samples" statement, all with bootstrap intervals.

Compute is counted as the core lab does: training FLOPs 6·N·D, inference FLOPs per problem
2·N·T with T the tokens generated (k samples x mean tokens per sample), N non-embedding
parameters. The law and coverage fits are ``jaxscale.laws.ttc``'s (``fit_form``); the trade is a
least-squares line through iso-accuracy points, its interval from resampling test problems.

Example:
    >>> curves = {run: pass_curve(lines) for run, lines in per_run.items()}  # doctest: +SKIP
    >>> trade(models, curves, levels=(0.5,), bootstrap=100)["test_per_train_decade"]
    ... # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxscale.errors import UserError
from jaxscale.estimators import pass_at_k
from jaxscale.laws import FitResult
from jaxscale.laws.ttc import fit_coverage, fit_test_time


def pass_curve(lines: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per-problem pass@k for every k = 1..n: shape (problems, n).

    Example:
      >>> pass_curve([{"n": 2, "correct": 1}]).tolist()
      [[0.5, 1.0]]
    """
    n = min(line["n"] for line in lines)
    ks = range(1, n + 1)
    return np.array([[pass_at_k(li["n"], li["correct"], k) for k in ks] for li in lines])


def coverage_fit(ks: Sequence[int], pass_k: Sequence[float]) -> dict[str, Any]:
    """c(k) = exp(a·k^b) fitted to one model's pass@k (Brown et al. 2024), or why not.

    Points with pass@k = 0 carry no log; a model already at pass@1 >= 0.99 has nothing to fit.
    """
    k, c = np.asarray(ks, np.float64), np.asarray(pass_k, np.float64)
    keep = c > 0
    none = {"a": None, "b": None, "r2": None}
    if c[0] >= 0.99:
        return none | {"skipped": "pass@1 >= 0.99: already solved"}
    if keep.sum() < 3:
        return none | {"skipped": f"{int(keep.sum())} k with pass@k > 0, fewer than 3"}
    fit = fit_coverage(k[keep], np.minimum(c[keep], 1.0))
    return {"a": fit.params["a"], "b": fit.params["b"], "r2": fit.r2}


def law_fit(models: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> tuple[dict, Any]:
    """Accuracy(N, T) = min(1, α·(N·T)^β) on every (model, k): accuracy pass@k, T the tokens
    generated per problem (k x tokens per sample); points at accuracy 0 are left out."""
    N, T, acc = [], [], []
    for m in models:
        for k, v in m["pass_at_k"].items():
            if v > 0:
                N.append(m["N"])
                T.append(int(k) * m["tokens_per_sample"])
                acc.append(v)
    if len(acc) < 3:
        return {"alpha": None, "beta": None, "r2": None, "ci": None,
                "skipped": f"{len(acc)} points with accuracy > 0"}, None  # fmt: skip
    fit: FitResult = fit_test_time(T, acc, N, bootstrap=bootstrap, seed=seed)
    out = {
        "alpha": fit.params["alpha"],
        "beta": fit.params["beta"],
        "r2": fit.r2,
        "ci": {k: list(v) for k, v in fit.ci.items()} if fit.ci else None,
        "stderr": fit.stderr,
        "n_points": fit.n_points,
        "accuracy": "pass@k",
        "T": "tokens generated per problem: k x tokens_per_sample",
    }
    return out, fit


def samples_to_reach(curve: np.ndarray, level: float) -> float | None:
    """The k (interpolated in log k) at which a pass@k curve (k = 1..n) reaches ``level``;
    None when pass@1 is already above it or pass@n below it."""
    if curve[0] >= level or curve[-1] < level:
        return None
    i = int(np.argmax(curve >= level))  # first k (0-based i) at the level; i >= 1
    lo, hi = curve[i - 1], curve[i]
    frac = (level - lo) / (hi - lo) if hi > lo else 1.0
    return float(np.exp(np.log(i) + frac * (np.log(i + 1) - np.log(i))))


def _iso_points(
    models: Sequence[Mapping[str, Any]], curves: Sequence[np.ndarray], levels: Sequence[float]
) -> list[tuple[int, float, float]]:
    """(level index, log10 train FLOPs, log10 test FLOPs per problem) where a model's pass@k
    crosses a level within its n samples."""
    out = []
    for li, level in enumerate(levels):
        for m, curve in zip(models, curves, strict=True):
            k = samples_to_reach(curve, level)
            if k is not None:
                test = 2.0 * m["N"] * k * m["tokens_per_sample"]
                out.append((li, float(np.log10(m["train_flops"])), float(np.log10(test))))
    return out


def _common_slope(points: list[tuple[int, float, float]]) -> float | None:
    """Least-squares slope of log test on log train with one intercept per level (levels with
    at least two points); None when no level has two distinct train computes."""
    xs, ys = [], []
    for li in {p[0] for p in points}:
        x = np.array([p[1] for p in points if p[0] == li])
        y = np.array([p[2] for p in points if p[0] == li])
        if len(x) >= 2 and np.ptp(x) > 0:
            xs.append(x - x.mean())
            ys.append(y - y.mean())
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    return float(x @ y / (x @ x))


def trade(
    models: Sequence[Mapping[str, Any]],
    curves: Sequence[np.ndarray],
    levels: Sequence[float],
    bootstrap: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Jones 2021's train/test trade: for each iso-accuracy level, log10(test FLOPs per problem
    to reach it) against log10(train FLOPs), one line per level with a common slope s.

    ``test_per_train_decade`` = 10^(-s): the factor of test compute one extra decade of train
    compute saves (Jones: about 15 on Hex). Its interval resamples the test problems (the same
    resample for every model) and refits; resamples with no slope are dropped.
    """
    points = _iso_points(models, [c.mean(0) for c in curves], levels)
    slope = _common_slope(points)
    out: dict[str, Any] = {
        "levels": list(levels),
        "points": [
            {"level": levels[li], "log10_train_flops": x, "log10_test_flops": y}
            for li, x, y in points
        ],
        "slope": slope,
        "test_per_train_decade": None if slope is None else 10.0 ** (-slope),
        "ci": None,
        "bootstrap": bootstrap,
    }
    if slope is None:
        out["skipped"] = "no accuracy level is crossed within n samples by two models"
        return out
    rng = np.random.default_rng(seed)
    n_problems = len(curves[0])
    draws = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n_problems, n_problems)
        s = _common_slope(_iso_points(models, [c[idx].mean(0) for c in curves], levels))
        if s is not None:
            draws.append(10.0 ** (-s))
    if draws:
        out["ci"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
        out["bootstrap_kept"] = len(draws)
    return out


def matches(
    models: Sequence[Mapping[str, Any]],
    curves: Sequence[np.ndarray],
    problems: int,
    bootstrap: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For every pair (smaller, larger model): how many samples the smaller needs for the
    larger's pass@1, and the compute ratios, with 95% intervals over resampled problems.

    ``inference_ratio`` = 2·N_s·k·T_s / (2·N_l·T_l) per problem; ``total_ratio`` adds each
    model's training FLOPs to its inference FLOPs over ``problems`` test problems.
    """
    rng = np.random.default_rng(seed)
    idx_draws = [rng.integers(0, len(curves[0]), len(curves[0])) for _ in range(bootstrap)]

    def one(i: int, j: int, ci: np.ndarray, cj: np.ndarray) -> tuple[float, float, float] | None:
        small, large = models[i], models[j]
        k = samples_to_reach(ci, float(cj[0]))
        if k is None:
            return None
        inf_s = 2.0 * small["N"] * k * small["tokens_per_sample"]
        inf_l = 2.0 * large["N"] * large["tokens_per_sample"]
        total = (small["train_flops"] + problems * inf_s) / (
            large["train_flops"] + problems * inf_l
        )
        return k, inf_s / inf_l, total

    out = []
    mean = [c.mean(0) for c in curves]
    for j in range(len(models)):
        for i in range(j):
            got = one(i, j, mean[i], mean[j])
            if got is None:
                continue
            boots = [one(i, j, curves[i][d].mean(0), curves[j][d].mean(0)) for d in idx_draws]
            boots = np.array([b for b in boots if b is not None])

            def ci(col: int, boots: np.ndarray = boots) -> list[float] | None:
                if len(boots) < max(10, bootstrap // 2):
                    return None
                return [float(np.percentile(boots[:, col], 2.5)),
                        float(np.percentile(boots[:, col], 97.5))]  # fmt: skip

            out.append(
                {
                    "small": models[i]["run"],
                    "large": models[j]["run"],
                    "N_ratio": models[j]["N"] / models[i]["N"],
                    "target_pass_at_1": float(mean[j][0]),
                    "samples": got[0],
                    "samples_ci": ci(0),
                    "inference_ratio": got[1],
                    "inference_ratio_ci": ci(1),
                    "total_ratio": got[2],
                    "total_ratio_ci": ci(2),
                    "problems": problems,
                }
            )
    return out


def statement(match: Mapping[str, Any] | None) -> str:
    """The plain sentence of the pair with the largest size ratio, intervals in brackets."""
    if match is None:
        return (
            "No smaller model reaches a larger one's pass@1 within its samples: "
            "add samples or sizes."
        )

    def iv(key: str) -> str:
        ci = match.get(f"{key}_ci")
        return f" [95% CI {ci[0]:.2g}, {ci[1]:.2g}]" if ci else ""

    return (
        f"The {match['N_ratio']:.1f}x smaller model ({match['small']}) with "
        f"{match['samples']:.1f}{iv('samples')} samples matches the larger one ({match['large']}) "
        f"at 1 sample (pass@1 {match['target_pass_at_1']:.2f}) for "
        f"{match['inference_ratio']:.2g}x{iv('inference_ratio')} the inference compute, and "
        f"{match['total_ratio']:.2g}x{iv('total_ratio')} the total compute (training plus "
        f"inference on {match['problems']} problems)."
    )


def require_models(models: Sequence[Any]) -> None:
    """Raise a UserError when there is no evaluated model to fit."""
    if not models:
        raise UserError("no finished run to evaluate: train the ladder first")


FIT_R2 = 0.9  # a law or coverage fit that explains less than this is warned about


def ttc_warnings(result: Mapping[str, Any]) -> list[str]:
    """What in a lab's result cannot be trusted, one line each: the test-time law or a coverage
    fit that explains less than :data:`FIT_R2` of the variance (a model already at pass@1 ≥ 0.99
    excepted), a law whose bootstrap interval is a single value (every resample gave the same
    fit: the interval says nothing), a trade drawn through fewer than 3 models, greedy exact
    match falling with N.

    Example:
      >>> ttc_warnings({"law": {"r2": 0.2}, "models": [], "trade": {"points": []}})[0][:27]
      'Accuracy(N, T) = α·(N·T)^β '
    """
    out = []
    r2 = result["law"].get("r2")
    if r2 is not None and r2 < FIT_R2:
        out.append(
            f"Accuracy(N, T) = α·(N·T)^β explains this ladder poorly (R² {r2:.2f} < {FIT_R2}): "
            "accuracy does not grow as a power of N·T here; do not extrapolate the law"
        )
    flat = [k for k, (lo, hi) in (result["law"].get("ci") or {}).items() if lo == hi]
    if flat:
        out.append(
            f"the law's bootstrap interval of {', '.join(flat)} is a single value: every "
            "resample gave the same fit (it passes through the few points below the cap at "
            "1), so the interval says nothing about its uncertainty"
        )
    for m in result["models"]:
        fit_r2 = m["coverage_fit"].get("r2")
        if fit_r2 is not None and fit_r2 < FIT_R2 and m["pass_at_k"].get("1", 0.0) < 0.99:
            out.append(f"the coverage fit of {m['run']} has R² {fit_r2:.2f} < {FIT_R2}")
    points = result["trade"].get("points", [])
    crossing = {p["log10_train_flops"] for p in points}
    if points and len(crossing) < 3:
        out.append(
            f"the train/test trade rests on {len(crossing)} models crossing its levels: its "
            "slope is a line through that few; add models or levels between their accuracies"
        )
    em = [m["greedy_exact_match"] for m in sorted(result["models"], key=lambda m: m["N"])]
    if any(b < a for a, b in itertools.pairwise(em)):
        out.append("greedy exact match falls somewhere as N grows: a run may be undertrained")
    return out
