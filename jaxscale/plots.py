"""Figures of the law library: pure functions from arrays (and laws) to a PNG path.

Every function takes its data and an output ``path``, draws with matplotlib's Agg backend, saves
and returns the path. :func:`law_figures` draws everything a sweep's data allow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from jaxscale.analysis import SweepAnalysis
from jaxscale.errors import UserError
from jaxscale.laws import (
    FitResult,
    IsoFlopResult,
    Law,
    fit_isoflop,
    predict_loss,
)
from jaxscale.results import as_columns

if TYPE_CHECKING:  # jaxscale.seeds draws with this module's helpers; typing needs only its class
    from jaxscale.seeds import SeedsAnalysis

PathLike = str | os.PathLike[str]
MAX_LEGEND = 10  # past this many series, a colour bar replaces the legend


def _save(fig: plt.Figure, path: PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def _series(
    x: np.ndarray,
    group: np.ndarray,
    loss: np.ndarray,
    path: PathLike,
    curve: Callable | None,
    xlabel: str,
    glabel: str,
    title: str,
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = np.unique(group)
    # A ladder has a few groups, one legend entry each; a table where every point has its own
    # group (an IsoFLOP set, a scattered CSV) is coloured by log10(group) on a colour bar instead,
    # with the law drawn for five representative groups.
    many = len(groups) > MAX_LEGEND
    lo, hi = np.log10(groups.min()), np.log10(groups.max())

    def color(g: float) -> tuple:
        return plt.cm.viridis(0.9 * (np.log10(g) - lo) / (hi - lo) if hi > lo else 0.0)

    grid = np.logspace(np.log10(x.min()), np.log10(x.max()), 100)
    for g in groups:
        m = group == g
        order = np.argsort(x[m])
        label = None if many else f"{glabel}={g:.3g}"
        ax.plot(x[m][order], loss[m][order], "o", color=color(g), ms=4 if many else 6, label=label)
    if curve is not None:
        shown = groups[np.linspace(0, len(groups) - 1, 5).astype(int)] if many else groups
        for g in shown:
            ax.plot(grid, curve(grid, g), "-", color=color(g), lw=1)
    if many:
        bar = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(lo, lo + (hi - lo) / 0.9))
        fig.colorbar(bar, ax=ax, label=f"log10 {glabel}")
    else:
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short ranges
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def loss_vs_n(N: Any, D: Any, loss: Any, path: PathLike, law: Law | None = None) -> Path:
    """Loss against N, one series per distinct D; with ``law``, the curve law(N, D) per D."""
    N, D, loss = (np.asarray(v, dtype=np.float64) for v in (N, D, loss))
    curve = None if law is None else lambda n, d: predict_loss(law, n, np.full_like(n, d))
    title = "loss vs model size" + (", with the fitted L(N, D)" if law is not None else "")
    return _series(N, D, loss, path, curve, "N (non-embedding parameters)", "D", title)


def loss_vs_d(N: Any, D: Any, loss: Any, path: PathLike, law: Law | None = None) -> Path:
    """Loss against D, one series per distinct N; with ``law``, the curve law(N, D) per N."""
    N, D, loss = (np.asarray(v, dtype=np.float64) for v in (N, D, loss))
    curve = None if law is None else lambda d, n: predict_loss(law, np.full_like(d, n), d)
    title = "loss vs training tokens" + (", with the fitted L(N, D)" if law is not None else "")
    return _series(D, N, loss, path, curve, "D (training tokens)", "N", title)


def isoflop(result: IsoFlopResult, path: PathLike) -> Path:
    """IsoFLOP profiles: loss against N per budget, each parabola (over the runs it was fitted
    to; the others are crosses) and its minimum with the minimum's bootstrap interval; budgets
    without an interior minimum drawn hollow."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(result.profiles)))
    for color, b in zip(colors, result.profiles, strict=True):
        used = "" if b.interior else " (not used)"
        face = color if b.interior else "none"
        fit_n, fit_loss = b.N[b.fitted], b.loss[b.fitted]
        ax.plot(fit_n, fit_loss, "o", color=color, mfc=face, ms=5, label=f"C={b.C:.2g}{used}")
        ax.plot(b.N[~b.fitted], b.loss[~b.fitted], "x", color=color, ms=5)
        if b.coef is not None:
            x = np.linspace(np.log(fit_n.min()), np.log(fit_n.max()), 100)
            ax.plot(np.exp(x), np.polyval(b.coef, x), "-", color=color, lw=1)
        if b.interior:
            ci = b.N_opt_ci
            xerr = None if ci is None else [[b.N_opt - ci[0]], [ci[1] - b.N_opt]]
            ax.errorbar(b.N_opt, b.loss_min, xerr=xerr, fmt="*", color=color, ms=12, mec="k",
                        capsize=3)  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("IsoFLOP profiles: parabolas in ln N, minima with 95% intervals", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def frontier(
    C: Any,
    N_opt: Any,
    a: float,
    G: float,
    path: PathLike,
    ci: tuple[float, float] | None = None,
    *,
    law_curve: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    heldout_C: float | None = None,
) -> Path:
    """Compute-optimal N_opt(C): the measured minima, the fitted line G·C^a with the band of its
    exponent's interval (pivoted at the data's central C), and Kaplan's 0.73 and Chinchilla's
    0.50 slopes through that point. ``law_curve`` adds approach 3's N_opt(C) as (C, N_opt,
    (lo, hi) band or None); ``heldout_C`` marks the budget held out of the law's fit."""
    C, N_opt = np.asarray(C, dtype=np.float64), np.asarray(N_opt, dtype=np.float64)
    grid = np.logspace(np.log10(C.min()) - 0.5, np.log10(C.max()) + 0.5, 100)
    c0 = float(np.exp(np.mean(np.log(C))))
    n0 = G * c0**a
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(C, N_opt, "o", color="k", label="N_opt(C): IsoFLOP minima")
    ax.plot(grid, G * grid**a, "-", color="C0", label=f"approach 2: a = {a:.3f}")
    if ci is not None:
        lo, hi = (n0 * (grid / c0) ** e for e in ci)
        ax.fill_between(grid, np.minimum(lo, hi), np.maximum(lo, hi), color="C0", alpha=0.2,
                        label=f"a in [{ci[0]:.3f}, {ci[1]:.3f}]")  # fmt: skip
    if law_curve is not None:
        cs, ns, band = law_curve
        ax.plot(cs, ns, "-", color="C1", label="approach 3: from L(N, D)")
        if band is not None:
            ax.fill_between(cs, band[0], band[1], color="C1", alpha=0.15)
    for slope, name, color in ((0.73, "Kaplan 2020", "C3"), (0.5, "Chinchilla 2022", "C2")):
        ax.plot(grid, n0 * (grid / c0) ** slope, "--", color=color, lw=0.8,
                label=f"{name}: {slope}")  # fmt: skip
    if heldout_C is not None:
        ax.axvline(heldout_C, color="grey", ls=":", label="held-out budget")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C (training FLOPs, attention and head counted)")
    ax.set_ylabel("N_opt")
    ax.legend(fontsize=7)
    return _save(fig, path)


def heldout(result: dict[str, Any], path: PathLike) -> Path:
    """Predicted against measured loss for the held-out runs, with the ±2% band."""
    meas = np.array([r["measured"] for r in result["runs"]])
    pred = np.array([r["predicted"] for r in result["runs"]])
    lo, hi = min(meas.min(), pred.min()) * 0.98, max(meas.max(), pred.max()) * 1.02
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    x = np.linspace(lo, hi, 2)
    ax.plot(x, x, "-", color="k", lw=0.8)
    ax.fill_between(x, 0.98 * x, 1.02 * x, color="C2", alpha=0.15, label="±2%")
    ax.plot(meas, pred, "o", color="C3", label="held-out runs")
    for i, r in enumerate(sorted(result["runs"], key=lambda r: r["N"])):
        # labels alternate below and above their points: neighbours in N often sit close
        ax.annotate(f"N={r['N']:.2g}", (r["measured"], r["predicted"]), fontsize=6,
                    xytext=(3, -8 if i % 2 else 4), textcoords="offset points")  # fmt: skip
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("predicted by L(N, D) fitted without them")
    ax.set_title(
        f"held out C={result['budget_C']:.2g}: max error {100 * result['max_abs_rel_err']:.2f}%",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def seeds(result: SeedsAnalysis, path: PathLike) -> Path:
    """Several seeds of one ladder: each seed's held-out errors with the ±2% band and their mean
    (one side every seed: a bias; both sides: noise), and each shape's gain from doubling D
    beyond the law's (± 2 standard errors over the seeds), against N."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.axhspan(-2, 2, color="C2", alpha=0.15, label="±2%")
    left.axhline(0, color="k", lw=0.8)
    for i, c in enumerate(result.seeds):
        errors = 100 * np.asarray(c.errors)
        left.plot(np.full(errors.shape, i), errors, "o", ms=4, color="C0" if c.warnings else "C2")
        left.plot([i - 0.3, i + 0.3], [100 * c.mean] * 2, "-", color="C3", lw=2)
    left.plot([], [], "-", color="C3", lw=2, label="mean")
    left.set_xticks(range(len(result.seeds)))
    left.set_xticklabels([",".join(map(str, c.seeds)) for c in result.seeds])
    left.set_xlabel("seed (green: passes every check)")
    left.set_ylabel("held-out error, predicted/measured − 1 (%)")
    left.set_title(f"{result.same_side} of {len(result.seeds)} on one side: "
                   f"P = {result.p_named_side:.2g} (named side)", fontsize=9)  # fmt: skip
    left.legend(fontsize=7)
    right.axhline(0, color="k", lw=0.8)
    Ds = sorted({g.D for g in result.gains})
    for g in result.gains:
        colour = f"C{Ds.index(g.D) % 10}"
        right.errorbar(g.N, g.drop - g.law_drop, yerr=2 * g.drop_se, fmt="o", ms=4,
                       color=colour, capsize=2)  # fmt: skip
        right.annotate(f"D={g.D:.2g}", (g.N, g.drop - g.law_drop), fontsize=6,
                       xytext=(3, 3), textcoords="offset points")  # fmt: skip
    right.set_xscale("log")
    right.set_xlabel("N")
    right.set_ylabel("gain from 2D beyond the law's (nats)")
    right.set_title("the law gives every N the same gain at one D", fontsize=9)
    return _save(fig, path)


def residuals(x: Any, fit: FitResult, path: PathLike, xlabel: str = "C = 6ND (FLOPs)") -> Path:
    """Log-space residuals (log ŷ - log y) of a fit against ``x`` (e.g. compute)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axhline(0, color="k", lw=0.8)
    ax.plot(np.asarray(x, dtype=np.float64), fit.residuals, "o", ms=4)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("log residual")
    ax.set_title(f"{fit.form}: R² = {fit.r2:.4f}", fontsize=9)
    return _save(fig, path)


def test_time(T: Any, accuracy: Any, path: PathLike, law: Law | None = None, N: Any = None) -> Path:
    """Accuracy against test-time compute T (one series per N); with ``law``, its curves."""
    T, acc = np.asarray(T, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    N = np.ones_like(T) if N is None else np.asarray(N, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.logspace(np.log10(T.min()), np.log10(T.max()), 100)
    for i, n in enumerate(np.unique(N)):
        m = np.isclose(N, n)
        ax.plot(T[m], acc[m], "o", color=f"C{i}", label=f"N={n:.3g}")
        if law is not None:
            ax.plot(grid, np.asarray(law(n, grid)), "-", color=f"C{i}", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("T (test-time compute)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    return _save(fig, path)


test_time.__test__ = False  # a plotting function, not a pytest test


def sweep_figures(a: SweepAnalysis, out_dir: PathLike) -> list[Path]:
    """Every figure of a sweep's report: the IsoFLOP profiles, N_opt(C) from both approaches
    with their bands and the held-out budget marked, the held-out predictions, loss against N
    and D with the fitted L(N, D), and its residuals."""
    d, out = a.design, Path(out_dir)
    law = a.fits["L_ND"].law if "L_ND" in a.fits else None
    paths = []
    if a.isoflop is not None:
        iso = a.isoflop
        paths.append(isoflop(iso, out / "isoflop.png"))
        curve = None
        if a.optimal and "curve" in a.optimal:
            c = a.optimal["curve"]
            band = (np.array(c["lo"]), np.array(c["hi"])) if "lo" in c else None
            curve = (np.array(c["C"]), np.array(c["N_opt"]), band)
        paths.append(
            frontier(
                [b.C for b in iso.used],
                [b.N_opt for b in iso.used],
                iso.a,
                iso.N_opt.G,
                out / "frontier.png",
                ci=iso.N_opt.ci,
                law_curve=curve,
                heldout_C=a.heldout["budget_C"] if a.heldout else None,
            )
        )
    if a.heldout:
        paths.append(heldout(a.heldout, out / "heldout.png"))
    paths += [
        loss_vs_n(d.N, d.D, d.loss, out / "loss_vs_n.png", law=law),
        loss_vs_d(d.N, d.D, d.loss, out / "loss_vs_d.png", law=law),
    ]
    if "L_ND" in a.fits:
        paths.append(residuals(d.C, a.fits["L_ND"], out / "residuals.png", "C (FLOPs, counted)"))
    return paths


def law_figures(
    records_or_cols: Iterable[dict[str, Any]] | Mapping[str, np.ndarray],
    fits: Mapping[str, FitResult],
    out_dir: PathLike,
) -> list[Path]:
    """Draw every figure the data allow into ``out_dir``; returns the paths written.

    Loss against N and D (with the ``L_ND`` fit's curves when present), residuals of each fit, and
    the IsoFLOP profiles and frontier when the runs share at least two compute budgets with an
    interior minimum.

    Args:
      records_or_cols: result records, or columns with ``N``, ``D``, ``loss`` (``C`` optional).
      fits: fitted laws by key (e.g. ``L_ND``, ``L_N``).
      out_dir: where the PNGs go.
    """
    cols = (
        dict(records_or_cols)
        if isinstance(records_or_cols, Mapping)
        else as_columns(records_or_cols)
    )
    N, D, loss = (np.asarray(cols[k], dtype=np.float64) for k in ("N", "D", "loss"))
    C = np.asarray(cols["C"], dtype=np.float64) if "C" in cols else 6 * N * D
    out = Path(out_dir)
    law = fits["L_ND"].law if "L_ND" in fits else None
    paths = [
        loss_vs_n(N, D, loss, out / "loss_vs_n.png", law=law),
        loss_vs_d(N, D, loss, out / "loss_vs_d.png", law=law),
    ]
    if "L_ND" in fits and fits["L_ND"].n_points == len(N):
        paths.append(residuals(C, fits["L_ND"], out / "residuals.png"))
    try:
        iso = fit_isoflop(N, D, loss, C)
    except UserError:
        return paths
    paths.append(isoflop(iso, out / "isoflop.png"))
    cs = [b.C for b in iso.used]
    paths.append(
        frontier(
            cs,
            [b.N_opt for b in iso.used],
            iso.a,
            iso.N_opt.G,
            out / "frontier.png",
            ci=iso.N_opt.ci,
        )
    )
    return paths
