"""A sweep's results -> fitted laws (laws.json), figures (*.png) and a readable report.md.

What is fitted is what the data allow:
  * ``L_N``: E + A/N^α over the model sizes at the largest D (Kaplan's L(N), offset form);
  * ``L_D``: E + B/D^β over the token counts at the largest N;
  * ``L_ND``: the Chinchilla form E + A/N^α + B/D^β over every finished run.
N is the non-embedding parameter count throughout (recorded in laws.json as the convention).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale import plots
from jaxscale.errors import UserError
from jaxscale.laws import FitResult, compute_optimal, fit_chinchilla, fit_power, save_laws
from jaxscale.laws.constrained import repeated_data_section
from jaxscale.results import as_columns, fit_points, read_records, results_path

LAW_TITLES = {
    "L_N": "L(N) = E + A/N^α at the largest D",
    "L_D": "L(D) = E + B/D^β at the largest N",
    "L_ND": "L(N, D) = E + A/N^α + B/D^β (Chinchilla form)",
}


def fit_sweep(cols: dict[str, np.ndarray]) -> tuple[dict[str, FitResult], dict[str, str]]:
    """Fit every law the sweep's points allow; returns (fits, why-not for the laws skipped)."""
    N, D, loss = cols["N"], cols["D"], cols["loss"]
    fits: dict[str, FitResult] = {}
    skipped: dict[str, str] = {}
    candidates = {
        "L_N": lambda: fit_power(N[D.max() == D], loss[D.max() == D]),
        "L_D": lambda: fit_power(D[N.max() == N], loss[N.max() == N]),
        "L_ND": lambda: fit_chinchilla(N, D, loss),
    }
    for key, fit in candidates.items():
        try:
            fits[key] = fit()
        except UserError as e:  # too few points for this form
            skipped[key] = str(e)
    return fits, skipped


def write_report(
    out_dir: Path, *, include_predicted: bool = False, against: Path | None = None
) -> dict[str, FitResult]:
    """Fit, plot and write ``laws.json``, ``*.png`` and ``report.md`` for a sweep directory.

    Args:
      out_dir: the sweep directory.
      include_predicted: fit early-stopped runs' predicted losses too (marked in laws.json).
      against: another sweep directory (e.g. a cosine grid beside a WSD sweep) whose fitted
        laws and losses the report compares with this one's.

    Raises:
      UserError: the directory has no finished run.
    """
    records = read_records(results_path(out_dir))
    points, choices = fit_points(records, include_predicted=include_predicted)
    if not points:
        raise UserError(f"{out_dir} has no finished run to report on (no results.jsonl lines)")
    cols = as_columns(points, ["N", "D", "C", "C_counted", "loss"])
    fits, skipped = fit_sweep(cols)
    repeated, repeated_md = repeated_data_section(points)  # (None, []) unless data repeat
    last = points[-1]
    provenance = {key: last.get(key) for key in PROVENANCE_KEYS}
    cost = training_cost(records)
    comparison = _compare(points, fits, against) if against else None
    save_laws(
        out_dir / "laws.json",
        fits,
        convention={"N": "non-embedding parameters", "D": "training tokens", "loss": "nats/token"},
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
    figures = plots.law_figures(cols, fits, out_dir)
    sections = _markdown(records, fits, skipped, figures, provenance)
    extra = _choices_md(choices) + _predicted_md(records, include_predicted) + _cost_md(cost)
    extra += _comparison_md(comparison) if comparison else []
    extra += repeated_md
    at = sections.index("## Figures")
    sections[at:at] = extra
    (out_dir / "report.md").write_text("\n".join(sections))
    return fits


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
    other_fits, _ = fit_sweep(as_columns(other_points, ["N", "D", "C", "C_counted", "loss"]))
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


def summary(fits: dict[str, FitResult]) -> str:
    """The fitted laws as a few readable lines (printed at the end of a sweep)."""
    lines = []
    for key, fit in fits.items():
        params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
        lines.append(f"{key:<5} {params}   (R² {fit.r2:.4f}, {fit.n_points} points)")
    return "\n".join(lines)


def _markdown(
    records: list[dict[str, Any]],
    fits: dict[str, FitResult],
    skipped: dict[str, str],
    figures: list[Path],
    provenance: dict[str, Any],
) -> list[str]:
    out = [f"# Sweep report: {records[-1]['config']['name']}", ""]
    out += [
        "## Runs",
        "",
        "| run | N | N_total | D | C = 6ND | lr | loss (nats/tok) | bits/byte | "
        "tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        bpb = f"{r['bpb']:.3f}" if r["bpb"] is not None else "-"
        out.append(
            f"| {r['run']} | {r['N']:,} | {r['N_total']:,} | {r['D']:,} | {r['C']:.3g} | "
            f"{r.get('lr') or r['config']['train']['lr']:g} | {loss} | "
            f"{bpb} | {r['tokens_per_s']:,.0f} | {r['wall_s']:.1f} | {r['status']} |"
        )
    out += ["", "## Fitted laws", ""]
    for key, fit in fits.items():
        out += [f"### {key}: {LAW_TITLES[key]}", "", "```", fit.report(), "```", ""]
    for key, why in skipped.items():
        out += [f"- {key} ({LAW_TITLES[key]}) not fitted: {why}"]
    if "L_ND" in fits:
        c = max(r["C"] for r in records if r["loss"] is not None)
        opt = compute_optimal(fits["L_ND"].law, c)
        out += [
            "",
            f"Compute-optimal at this sweep's largest budget C = {c:.3g} FLOPs: "
            f"N_opt = {opt.N_opt:.3g}, D_opt = {opt.D_opt:.3g} "
            f"({opt.tokens_per_param:.1f} tokens/parameter), predicted loss "
            f"{opt.loss:.4f}.",
        ]
    out += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    out += ["", "## Provenance", "", "```json", json.dumps(provenance, indent=1), "```", ""]
    return out


def _choices_md(choices: list[dict[str, Any]]) -> list[str]:
    if not choices:
        return []
    out = [
        "## Learning rate per point",
        "",
        "Each (N, D) is fitted at the learning rate with the lowest loss (mean over seeds).",
        "",
        "| point | chosen lr | loss by lr |",
        "|---|---|---|",
    ]
    for c in choices:
        by_lr = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in sorted(c["loss_by_lr"].items()))
        out.append(f"| {c['point']} | {c['lr']:g} | {by_lr} |")
    return [*out, ""]


def _predicted_md(records: list[dict[str, Any]], included: bool) -> list[str]:
    predicted = [r for r in records if r.get("predicted")]
    if not predicted:
        return []
    use = "are included in the fits above" if included else "are not in the fits above"
    out = [
        "## Early-stopped runs (predicted, not measured)",
        "",
        f"These losses are L(t) = L_inf + A·t^-alpha extrapolated to each run's end; they {use}.",
        "",
        "| run | stopped at step | of | loss at stop | predicted final loss |",
        "|---|---|---|---|---|",
    ]
    for r in predicted:
        guess = f"{r['loss']:.4f}" if r["loss"] is not None else "no fit"
        at_stop = f"{r['loss_at_stop']:.4f}" if r.get("loss_at_stop") is not None else "-"
        out.append(f"| {r['run']} | {r['stopped_at']} | {r['steps']} | {at_stop} | {guess} |")
    return [*out, ""]


def _cost_md(cost: dict[str, Any]) -> list[str]:
    if cost["trained"] >= cost["cosine_grid"]:
        return []
    return [
        "## Training cost",
        "",
        f"Tokens trained per model: {cost['trained']:,.0f}, against "
        f"{cost['cosine_grid']:,.0f} for a cosine grid of the same points: "
        f"{100 * cost['saving']:.0f}% saved.",
        "",
    ]


def _comparison_md(c: dict[str, Any]) -> list[str]:
    out = [f"## Against {c['other']}", ""]
    if c["matched_points"]:
        out += [
            f"{c['matched_points']} shared points: mean loss difference "
            f"{c['mean_loss_delta']:+.4f} nats, largest {c['max_abs_loss_delta']:.4f}.",
            "",
        ]
    other = c["other_training_tokens"]["trained"]
    out += [f"That sweep trained {other:,.0f} tokens per model.", ""]
    for key, params in c["laws"].items():
        out += [
            f"### {key}",
            "",
            "| param | this ± se | other ± se | within 2 se |",
            "|---|---|---|---|",
        ]
        for name, v in params.items():
            out.append(
                f"| {name} | {v['this']:.4g} ± {v['this_stderr']:.2g} | "
                f"{v['other']:.4g} ± {v['other_stderr']:.2g} | "
                f"{'yes' if v['agrees'] else 'no'} |"
            )
        out.append("")
    return out
