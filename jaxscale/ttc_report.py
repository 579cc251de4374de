"""Figures and the report section of the test-time compute lab (from a ``ttc.json`` record).

Figures: pass@k against k per model with the coverage fits; accuracy against N·T with the fitted
law, and the (N, T) plane with the law's iso-accuracy curves; the train/test trade; exact match
against the continuous metrics across N (the emergence picture).

Example:
    >>> figs = ttc_figures(result, curves, law_fit, Path("reports/ttc"))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale.laws import FitResult
from jaxscale.plots import _save, plt


def _pass_at_k(result: dict[str, Any], curves: Sequence[np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (m, c) in enumerate(zip(result["models"], curves, strict=True)):
        mean = c.mean(0)
        k_all = np.arange(1, len(mean) + 1)
        ks = [int(k) for k in m["pass_at_k"]]
        ax.plot(ks, [m["pass_at_k"][str(k)] for k in ks], "o", color=f"C{i}",
                label=f"{m['run']} (N={m['N']:.3g})")  # fmt: skip
        ax.plot(k_all, mean, "-", color=f"C{i}", lw=0.6, alpha=0.5)
        fit = m["coverage_fit"]
        if fit.get("a") is not None:
            ax.plot(k_all, np.exp(fit["a"] * k_all ** fit["b"]), "--", color=f"C{i}", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k")
    ax.set_title("coverage: points measured, dashed exp(a·k^b)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _law(result: dict[str, Any], law: FitResult | None, path: Path) -> Path:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    nt, acc, Ns, Ts = [], [], [], []
    for i, m in enumerate(result["models"]):
        ks = [int(k) for k in m["pass_at_k"]]
        T = np.array(ks) * m["tokens_per_sample"]
        a = np.array([m["pass_at_k"][str(k)] for k in ks])
        ax.plot(m["N"] * T, a, "o", color=f"C{i}", label=f"N={m['N']:.3g}")
        nt += list(m["N"] * T)
        acc += list(a)
        Ns += [m["N"]] * len(ks)
        Ts += list(T)
    grid = np.logspace(np.log10(min(nt)), np.log10(max(nt)), 100)
    if law is not None:
        ax.plot(grid, np.asarray(law.law(grid, 1.0)), "k-", lw=1, label="α·(N·T)^β")
    ax.set_xscale("log")
    ax.set_xlabel("N·T (parameters x tokens generated per problem)")
    ax.set_ylabel("pass@k")
    ax.legend(fontsize=7)
    sc = ax2.scatter(Ts, Ns, c=acc, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(sc, ax=ax2, label="pass@k")
    p = result["law"]
    if p["alpha"] is not None:
        t_grid = np.logspace(np.log10(min(Ts)) - 0.3, np.log10(max(Ts)) + 0.3, 50)
        for level in result["trade"]["levels"]:
            nt_level = (level / p["alpha"]) ** (1 / p["beta"])
            ax2.plot(t_grid, nt_level / t_grid, "--", lw=1, label=f"law: accuracy {level:g}")
        ax2.set_ylim(min(Ns) / 2, max(Ns) * 2)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("T (tokens generated per problem)")
    ax2.set_ylabel("N")
    ax2.set_title("iso-accuracy curves of the fitted law")
    ax2.legend(fontsize=7)
    return _save(fig, path)


def _trade(result: dict[str, Any], path: Path) -> Path:
    tr = result["trade"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, level in enumerate(tr["levels"]):
        pts = [p for p in tr["points"] if p["level"] == level]
        if not pts:
            continue
        x = np.array([p["log10_train_flops"] for p in pts])
        y = np.array([p["log10_test_flops"] for p in pts])
        ax.plot(x, y, "o", color=f"C{i}", label=f"pass@k = {level:g}")
        if tr["slope"] is not None and len(x) >= 2:
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, y.mean() + tr["slope"] * (xs - x.mean()), "-", color=f"C{i}", lw=1)
    ax.set_xlabel("log10 train FLOPs (6·N·D)")
    ax.set_ylabel("log10 test FLOPs per problem (2·N·T)")
    saved = tr["test_per_train_decade"]
    ax.set_title("train/test trade" + (f": {saved:.3g}x test saved per decade" if saved else ""))
    ax.legend(fontsize=7)
    return _save(fig, path)


def _emergence(result: dict[str, Any], path: Path) -> Path:
    ms = result["models"]
    N = np.array([m["N"] for m in ms])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(N, [m["greedy_exact_match"] for m in ms], "o-", label="greedy exact match")
    ax.plot(N, [m["pass_at_k"][min(m["pass_at_k"], key=int)] for m in ms], "s--",
            label="pass@1 (sampled)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("exact match")
    ax.legend(fontsize=7)
    ax2.plot(N, [m["answer_logprob"] for m in ms], "o-", color="C2", label="log p(answer)")
    ax2.set_xscale("log")
    ax2.set_xlabel("N")
    ax2.set_ylabel("mean log p(correct completion), nats", color="C2")
    ax3 = ax2.twinx()
    ax3.plot(N, [m["edit_distance"] for m in ms], "s--", color="C3", label="edit distance")
    ax3.set_ylabel("greedy edit distance (tokens)", color="C3")
    ax2.set_title("continuous metrics")
    return _save(fig, path)


def ttc_figures(
    result: dict[str, Any], curves: Sequence[np.ndarray], law: FitResult | None, out_dir: Path
) -> list[Path]:
    """Draw the lab's four figures into ``out_dir``; return their paths."""
    return [
        _pass_at_k(result, curves, out_dir / "ttc_pass_at_k.png"),
        _law(result, law, out_dir / "ttc_accuracy_vs_compute.png"),
        _trade(result, out_dir / "ttc_trade.png"),
        _emergence(result, out_dir / "ttc_emergence.png"),
    ]


def _ci(ci: Sequence[float] | None, fmt: str = ".3g") -> str:
    return f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else ""


def ttc_markdown(result: dict[str, Any], figures: Sequence[Path]) -> list[str]:
    """The report's test-time compute section (markdown lines)."""
    law, tr = result["law"], result["trade"]
    ks = [str(k) for k in result["k"]]
    out = [
        "## Test-time compute",
        "",
        f"Task `{result['task']}`, loss on {result['loss_on']} tokens; "
        f"{result['test_problems']} held-out problems, {result['samples_per_problem']} samples "
        f"each at temperature {result['temperature']:g}; decode "
        f"{result['decode_tokens_per_s']:,.0f} tokens/s (batch {result['decode_batch']}).",
        "",
        f"**{result['statement']}**",
        "",
    ]
    warnings = result.get("warnings", [])
    if warnings:
        out += [f"**{len(warnings)} warning(s)**: read them before using these fits.", ""]
        out += [f"- {w}" for w in warnings] + [""]
    if law["alpha"] is not None:
        ci = law["ci"] or {}
        out += [
            f"Accuracy(N, T) = α·(N·T)^β (pass@k, T tokens per problem): α = "
            f"{law['alpha']:.3g}{_ci(ci.get('alpha'))}, β = {law['beta']:.3f}"
            f"{_ci(ci.get('beta'), '.3f')} (95% bootstrap CI), R² = {law['r2']:.3f}.",
            "",
        ]
    if tr["test_per_train_decade"] is not None:
        out += [
            f"Train/test trade (Jones 2021, levels {', '.join(f'{v:g}' for v in tr['levels'])}): "
            f"each extra decade of train compute saves {tr['test_per_train_decade']:.3g}x"
            f"{_ci(tr['ci'])} test compute (slope {tr['slope']:.3f}).",
            "",
        ]
    out += [
        "| run | N | greedy EM | log p(answer) | edit dist | tokens/sample | "
        + " | ".join(f"pass@{k}" for k in ks)
        + " | "
        + " | ".join(f"maj@{k}" for k in ks)
        + " | coverage R² |",
        "|---" * (7 + 2 * len(ks)) + "|",
    ]
    for m in result["models"]:
        r2 = m["coverage_fit"].get("r2")
        out.append(
            f"| {m['run']} | {m['N']:,} | {m['greedy_exact_match']:.3f} | "
            f"{m['answer_logprob']:.2f} | {m['edit_distance']:.2f} | "
            f"{m['tokens_per_sample']:.2f} | "
            + " | ".join(f"{m['pass_at_k'][k]:.3f}" for k in ks)
            + " | "
            + " | ".join(f"{m['maj_at_k'][k]:.3f}" for k in ks)
            + f" | {'-' if r2 is None else f'{r2:.3f}'} |"
        )
    out += [""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return out
