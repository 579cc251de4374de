"""A sweep's results -> its laws, checked (laws.json), figures (*.png) and report.md.

What is fitted and checked is ``analysis.analyse``'s business; this module puts the results
where people and tools read them. N is the law's parameter count: non-embedding parameters plus
the (tied) output head, Porian et al. 2024's convention (``N_with_head`` in a result record;
sweeps written before it fall back to non-embedding ``N``), recorded in laws.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale import markdown, plots
from jaxscale.analysis import SweepAnalysis, analyse
from jaxscale.errors import UserError
from jaxscale.laws import FitResult, save_laws
from jaxscale.laws.constrained import repeated_data_section
from jaxscale.results import fit_points, read_records, results_path

CONVENTIONS = {
    "N_with_head": "non-embedding parameters plus the tied output head (Porian et al. 2024)",
    "N": "non-embedding parameters (Kaplan et al. 2020)",
}


def n_key_of(points: list[dict[str, Any]]) -> str:
    """The law's N: ``N_with_head`` where every point records it, else ``N``."""
    return "N_with_head" if all("N_with_head" in p for p in points) else "N"


def analyse_points(points: list[dict[str, Any]], *, bootstrap: int | None = None) -> SweepAnalysis:
    """A sweep's fit points analysed as its report analyses them: N as ``n_key_of`` picks it,
    the corpus' entropy where known, the config's ``isoflop_window``, and the bootstrap's
    resamples drawn with the sweep's seed (``bootstrap`` resamples; None: ``analyse``'s)."""
    last = points[-1]
    window = (last.get("config") or {}).get("isoflop_window")
    return analyse(points, n_key=n_key_of(points), entropy=last.get("entropy"),
                   bootstrap=bootstrap, seed=last.get("seed") or 0,
                   isoflop_window=window)  # fmt: skip


def write_report(
    out_dir: Path, *, include_predicted: bool = False, against: Path | None = None
) -> SweepAnalysis:
    """Fit, check, plot and write ``laws.json``, ``*.png`` and ``report.md`` for a sweep.

    Args:
      out_dir: the sweep directory.
      include_predicted: fit early-stopped runs' predicted losses too (marked in laws.json).
      against: another sweep directory (e.g. a cosine grid beside a WSD sweep) whose fitted
        laws and losses the report compares with this one's.

    Returns:
      The analysis (fits, checks and warnings).

    Raises:
      UserError: the directory has no finished run.
    """
    records = read_records(results_path(out_dir))
    points, choices = fit_points(records, include_predicted=include_predicted)
    if not points:
        raise UserError(f"{out_dir} has no finished run to report on (no results.jsonl lines)")
    n_key = n_key_of(points)
    last = points[-1]
    a = analyse_points(points)
    repeated, repeated_md = repeated_data_section(points, n_key)  # (None, []) unless data repeat
    if repeated:
        a.warnings.append(repeated["warning"])
    provenance = {key: last.get(key) for key in PROVENANCE_KEYS}
    cost = training_cost(records)
    comparison = _compare(points, a.fits, against) if against else None
    save_laws(
        out_dir / "laws.json",
        a.fits,
        **a.to_dict(),
        convention={
            "N": CONVENTIONS[n_key],
            "D": "training tokens",
            "C": "training FLOPs counting attention and the head",
            "loss": "nats/token",
        },
        provenance=provenance,
        config=last.get("config"),
        n_runs=len(points),
        predicted_points=sum(p.get("status") == "predicted" for p in points),
        lr_choices=choices,
        training_tokens=cost,
        comparison=comparison,
        data_constrained=repeated,
        written=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    figures = plots.sweep_figures(a, out_dir)
    sections = [f"# Sweep report: {last['config']['name']}", ""]
    sections += markdown.checks_md(a) + markdown.laws_md(a.fits, a.skipped)
    sections += markdown.runs_md(records) + markdown.choices_md(choices)
    sections += markdown.predicted_md(records, include_predicted) + markdown.cost_md(cost)
    sections += markdown.comparison_md(comparison) if comparison else []
    sections += repeated_md
    ttc_md = out_dir / "ttc.md"  # the test-time compute lab's section, when it ran
    sections += ttc_md.read_text().splitlines() if ttc_md.exists() else []
    sections += markdown.figures_md(figures) + markdown.provenance_md(provenance)
    (out_dir / "report.md").write_text("\n".join(sections))
    return a


PROVENANCE_KEYS = (
    "corpus",
    "corpus_fingerprint",
    "tokenizer",
    "config_fingerprint",
    "backend",
    "jax_version",
    "versions",
    "platform",
)


def training_cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Tokens the sweep trained (per model) against a cosine grid of the same points.

    A cosine run trains its D. A WSD column (one shape, lr and seed) trains its longest run plus
    each shorter run's cooldown (``steps - branch_at``); an early-stopped run, up to its stop.
    """
    per_step = {r["run"]: r["D"] / r["steps"] for r in records}
    trained, grid = 0.0, 0.0
    columns: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        grid += r["D"]
        if r.get("branch_at") is not None:
            columns.setdefault(
                (r["n_layer"], r["d_model"], r["n_head"], r.get("lr"), r.get("seed")), []
            ).append(r)
        else:
            trained += per_step[r["run"]] * (r.get("stopped_at") or r["steps"])
    for column in columns.values():
        longest = max(column, key=lambda r: r["steps"])
        trained += longest["D"]
        trained += sum(
            per_step[r["run"]] * (r["steps"] - r["branch_at"]) for r in column if r is not longest
        )
    return {"trained": trained, "cosine_grid": grid, "saving": 1 - trained / grid if grid else 0}


def _compare(
    points: list[dict[str, Any]], fits: dict[str, FitResult], other_dir: Path
) -> dict[str, Any]:
    """This sweep's fits and losses beside another sweep's (same points, other schedule)."""
    other_points, _ = fit_points(read_records(results_path(other_dir)))
    if not other_points:
        raise UserError(f"{other_dir} has no finished run to compare with")
    other_fits = analyse(other_points, n_key=n_key_of(other_points), bootstrap=0).fits
    laws = {}
    for key in fits.keys() & other_fits.keys():
        a, b = fits[key], other_fits[key]
        laws[key] = {
            name: {
                "this": a.params[name],
                "this_stderr": a.stderr[name],
                "other": b.params[name],
                "other_stderr": b.stderr[name],
                # agreement within two combined standard errors
                "agrees": bool(
                    abs(a.params[name] - b.params[name])
                    <= 2 * math.hypot(a.stderr[name], b.stderr[name])
                ),
            }
            for name in a.params
        }
    key = lambda r: (r["N"], r.get("D_target", r["D"]))  # noqa: E731
    theirs = {key(r): r["loss"] for r in other_points}
    deltas = [p["loss"] - theirs[key(p)] for p in points if key(p) in theirs]
    return {
        "other": str(other_dir),
        "laws": laws,
        "matched_points": len(deltas),
        "mean_loss_delta": float(np.mean(deltas)) if deltas else None,
        "max_abs_loss_delta": float(np.max(np.abs(deltas))) if deltas else None,
        "other_training_tokens": training_cost(read_records(results_path(other_dir))),
    }


def summary(a: SweepAnalysis) -> str:
    """The laws and their checks as a few readable lines (printed at the end of a sweep)."""
    lines = []
    for key, fit in a.fits.items():
        params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
        lines.append(f"{key:<5} {params}   (R² {fit.r2:.4f}, {fit.n_points} points)")
    if a.heldout:
        h = a.heldout
        lines.append(
            f"held out: the {len(h['runs'])} runs of the largest budget (C={h['budget_C']:.3g}) "
            f"predicted within {100 * h['max_abs_rel_err']:.2f}%"
            + (
                f" (Kaplan's L(N, D) on the same runs: {100 * h['kaplan_max_abs_rel_err']:.2f}%)"
                if h.get("kaplan_max_abs_rel_err") is not None
                else ""
            )
        )
    if a.optimal:
        o = a.optimal
        ci = o.get("tokens_per_param_ci")
        tpp = f"{o['tokens_per_param']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
        lines.append(f"compute-optimal at C={o['C']:.3g}: N={o['N_opt']:.3g}, {tpp} tokens/param")
    if a.agreement:
        lines.append(a.agreement["statement"])
    if a.truth:
        t = a.truth
        lines.append(f"truth: fitted E = {t['E']:.4f} against the exact entropy "
                     f"{t['entropy']:.4f} ({100 * t['rel_err']:+.1f}%)")  # fmt: skip
    lines += [f"warning: {w}" for w in a.warnings] or ["no warnings"]
    return "\n".join(lines)
