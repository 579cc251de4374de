"""A sweep's results -> fitted laws (laws.json), figures (*.png) and a readable report.md.

What is fitted is what the data allow:
  * ``L_N``: E + A/N^α over the model sizes at the largest D (Kaplan's L(N), offset form);
  * ``L_D``: E + B/D^β over the token counts at the largest N;
  * ``L_ND``: the Chinchilla form E + A/N^α + B/D^β over every finished run.
N is the non-embedding parameter count throughout (recorded in laws.json as the convention).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale import plots
from jaxscale.errors import UserError
from jaxscale.laws import FitResult, compute_optimal, fit_chinchilla, fit_power, save_laws
from jaxscale.results import as_columns, read_records, results_path

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


def write_report(out_dir: Path) -> dict[str, FitResult]:
    """Fit, plot and write ``laws.json``, ``*.png`` and ``report.md`` for a sweep directory.

    Raises:
      UserError: the directory has no finished run.
    """
    records = read_records(results_path(out_dir))
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise UserError(f"{out_dir} has no finished run to report on (no results.jsonl lines)")
    cols = as_columns(ok, ["N", "D", "C", "C_counted", "loss"])
    fits, skipped = fit_sweep(cols)
    last = ok[-1]
    provenance = {
        key: last.get(key)
        for key in (
            "corpus",
            "corpus_fingerprint",
            "tokenizer",
            "config_fingerprint",
            "backend",
            "jax_version",
            "versions",
            "platform",
        )
    }
    save_laws(
        out_dir / "laws.json",
        fits,
        convention={"N": "non-embedding parameters", "D": "training tokens", "loss": "nats/token"},
        provenance=provenance,
        config=last.get("config"),
        n_runs=len(ok),
        written=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    figures = plots.law_figures(cols, fits, out_dir)
    (out_dir / "report.md").write_text(_markdown(records, fits, skipped, figures, provenance))
    return fits


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
) -> str:
    out = [f"# Sweep report: {records[-1]['config']['name']}", ""]
    out += [
        "## Runs",
        "",
        "| run | N | N_total | D | C = 6ND | loss (nats/tok) | bits/byte | "
        "tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        bpb = f"{r['bpb']:.3f}" if r["bpb"] is not None else "-"
        out.append(
            f"| {r['run']} | {r['N']:,} | {r['N_total']:,} | {r['D']:,} | {r['C']:.3g} | {loss} | "
            f"{bpb} | {r['tokens_per_s']:,.0f} | {r['wall_s']:.1f} | {r['status']} |"
        )
    out += ["", "## Fitted laws", ""]
    for key, fit in fits.items():
        out += [f"### {key}: {LAW_TITLES[key]}", "", "```", fit.report(), "```", ""]
    for key, why in skipped.items():
        out += [f"- {key} ({LAW_TITLES[key]}) not fitted: {why}"]
    if "L_ND" in fits:
        c = max(r["C"] for r in records if r["status"] == "ok")
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
    return "\n".join(out)
