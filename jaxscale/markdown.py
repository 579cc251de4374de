"""report.md: the sections a scientist reads, rendered from a sweep's analysis and records.

Pure functions from data to lists of Markdown lines; ``report.write_report`` puts them together.
The first section says what to believe (the checks), the fitted laws come after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxscale.analysis import SweepAnalysis
from jaxscale.laws import FitResult

LAW_TITLES = {
    "L_N": "L(N) = E + A/N^α at the largest D",
    "L_D": "L(D) = E + B/D^β at the largest N",
    "L_ND": "L(N, D) = E + A/N^α + B/D^β (Chinchilla form)",
}


def _ci(value: float, ci: list[float] | None, fmt: str = ".3g") -> str:
    if ci is None:
        return f"{value:{fmt}}"
    return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def checks_md(a: SweepAnalysis) -> list[str]:
    """What to believe: held-out predictions, the compute optimum with intervals, approaches 2
    and 3 side by side, the truth on a synthetic corpus, and every warning."""
    out = ["## Can this law be trusted?", ""]
    if a.warnings:
        out += [f"**{len(a.warnings)} warning(s)**: read them before using the law.", ""]
        out += [f"- {w}" for w in a.warnings] + [""]
    else:
        out += ["No warnings: every check below passed.", ""]
    h = a.heldout
    if h:
        out += [
            f"### Held out: the largest budget (C = {h['budget_C']:.3g})",
            "",
            f"L(N, D) refitted on the {h['fit']['n_points']} runs below it predicts the "
            f"{len(h['runs'])} runs it never saw within **{100 * h['max_abs_rel_err']:.2f}%** "
            f"(largest |relative error|; mean error {100 * h['mean_rel_err']:+.2f}%)."
            + (
                f" The law fitted to every run, these included, is within "
                f"{100 * h['full_fit_max_abs_rel_err']:.2f}% of them."
                if h.get("full_fit_max_abs_rel_err") is not None
                else ""
            )
            + (
                f" Kaplan's L(N, D), refitted on the same runs, predicts them within "
                f"{100 * h['kaplan_max_abs_rel_err']:.2f}%."
                if h.get("kaplan_max_abs_rel_err") is not None
                else ""
            ),
            "",
            "| run | N | D | measured | predicted | error |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['run']} | {r['N']:.3g} | {r['D']:.3g} | {r['measured']:.4f} | "
            f"{r['predicted']:.4f} | {100 * r['rel_err']:+.2f}% |"
            for r in h["runs"]
        ]
        out.append("")
    elif "heldout" in a.skipped:
        out += [f"No held-out check: {a.skipped['heldout']}.", ""]
    o = a.optimal
    if o:
        pct = "95% bootstrap intervals in brackets"
        out += [
            f"### Compute-optimal at C = {o['C']:.3g} FLOPs (from L(N, D); {pct})",
            "",
            f"- N_opt = {_ci(o['N_opt'], o.get('N_opt_ci'))}, D_opt = "
            f"{_ci(o['D_opt'], o.get('D_opt_ci'))}",
            f"- tokens per parameter: {_ci(o['tokens_per_param'], o.get('tokens_per_param_ci'))}",
            f"- over the budgets, FLOPs counted: N_opt ∝ C^a with a = "
            f"{_ci(o['a'], o.get('a_ci'), '.3f')}; D_opt ∝ C^b with b = "
            f"{_ci(o['b'], o.get('b_ci'), '.3f')} (where C ∝ N·D, a = β/(α+β) = "
            f"{o['a_asymptotic']:.3f} and b = α/(α+β) = {o['b_asymptotic']:.3f})",
            "",
        ]
    if a.agreement:
        out += [f"### Approach 2 against approach 3: {a.agreement['statement']}.", ""]
    if a.isoflop:
        out += ["### IsoFLOP profiles (approach 2)", "", "```", a.isoflop.report(), "```", ""]
    if a.truth:
        t = a.truth
        ci = f" [{t['E_ci'][0]:.4f}, {t['E_ci'][1]:.4f}]" if t["E_ci"] else ""
        out += [
            "### Against the truth",
            "",
            f"The corpus' exact entropy rate is {t['entropy']:.4f} nats/token; the fitted "
            f"irreducible loss E = {t['E']:.4f}{ci} ({100 * t['rel_err']:+.1f}%).",
            "",
        ]
    return out


def runs_md(records: list[dict[str, Any]]) -> list[str]:
    out = [
        "## Runs",
        "",
        "| run | budget C | N | N_total | D | steps | batch | lr | loss (nats/tok) | bits/byte | "
        "tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        bpb = f"{r['bpb']:.3f}" if r["bpb"] is not None else "-"
        budget = f"{r['budget']:.3g}" if r.get("budget") else "-"
        lr = r.get("lr") or r["config"]["train"]["lr"]
        out.append(
            f"| {r['run']} | {budget} | {r['N']:,} | {r['N_total']:,} | {r['D']:,} | "
            f"{r['steps']} | {r.get('batch_size', '-')} | {lr:.3g} | {loss} | {bpb} | "
            f"{r['tokens_per_s']:,.0f} | {r['wall_s']:.1f} | {r['status']} |"
        )
    return [*out, ""]


def laws_md(fits: dict[str, FitResult], skipped: dict[str, str]) -> list[str]:
    out = ["## Fitted laws", ""]
    for key, fit in fits.items():
        out += [f"### {key}: {LAW_TITLES[key]}", "", "```", fit.report(), "```", ""]
    for key, why in skipped.items():
        if key in LAW_TITLES:
            out += [f"- {key} ({LAW_TITLES[key]}) not fitted: {why}"]
    return [*out, ""]


def figures_md(figures: list[Path]) -> list[str]:
    return ["## Figures", "", *(f"![{p.stem}]({p.name})" for p in figures), ""]


def provenance_md(provenance: dict[str, Any]) -> list[str]:
    return ["## Provenance", "", "```json", json.dumps(provenance, indent=1), "```", ""]


def choices_md(choices: list[dict[str, Any]]) -> list[str]:
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


def predicted_md(records: list[dict[str, Any]], included: bool) -> list[str]:
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


def cost_md(cost: dict[str, Any]) -> list[str]:
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


def comparison_md(c: dict[str, Any]) -> list[str]:
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
