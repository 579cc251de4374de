"""How often a ladder passes the sweep's own checks by chance alone, before any training: draw
its runs from a known law plus seed noise, run the sweep's analysis on each draw, and count.

A ladder of noisy runs can fail its checks while the law's form is right. This says how often,
so that a design can be chosen on its pass rate and its cost. The draws follow the law's form
exactly: where real runs bend away from it (the quick ladder's larger models gained more from
data than the additive form allows when it trained on 4 windows of 128 bytes a step, README
"How the ladder was chosen"), the real pass rate is lower, so check a design chosen here with
seeds it was not chosen on (``jaxscale seeds``):

    .venv/bin/python scripts/ladder_power.py configs/quick.yaml \
        --noise-from tests/data/quick_seed0.jsonl tests/data/quick_seed1.jsonl \
        [--set per_budget=6]

- the truth: a ``laws.json``'s ``L_ND`` (``--law``, the committed quick example by default);
- the noise, measured from two seeds of one ladder (``--noise-from``): runs of one shape share
  their initialisation and data order across budgets, so a seed's luck is partly the shape's
  (one draw per shape, ``shape``) and partly the run's (``run``), split by a one-way random
  effects analysis of the two seeds' log-loss ratios; or given (``--noise SHAPE RUN``);
- the checks, as ``jaxscale sweep`` makes them: the held-out budget predicted within 2%, every
  IsoFLOP minimum interior, approach 2's interval (``--bootstrap`` residual resamples) containing
  approach 3's a (L(N, D)'s own slope, FLOPs counted), no wider than ``--a-width`` (0.25).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from jaxscale.analysis import A_CI_WIDTH, analyse
from jaxscale.config import TOKENIZER_VOCAB, load_config
from jaxscale.counting import flops_per_token_counted, params_with_head
from jaxscale.heldout import HELDOUT_TOLERANCE
from jaxscale.laws import load_law
from jaxscale.laws.isoflop import fit_isoflop
from jaxscale.results import read_records


def seed_noise(a: str, b: str) -> tuple[float, float, int]:
    """(shape, run) log-loss noise of one seed, and the runs behind them, from two seeds'
    results of the same ladder: a one-way random-effects analysis of the runs' log(loss_b /
    loss_a) grouped by shape (each ratio carries two seeds' noise, hence the halving)."""
    runs = [{r["run"]: r for r in read_records(p) if r["loss"]} for p in (a, b)]
    groups: dict[tuple, list[float]] = defaultdict(list)
    for name in sorted(set(runs[0]) & set(runs[1])):
        r0, r1 = runs[0][name], runs[1][name]
        groups[(r0["n_layer"], r0["d_model"], r0["n_head"])].append(np.log(r1["loss"] / r0["loss"]))
    sizes = np.array([len(g) for g in groups.values()])
    n, k = sizes.sum(), len(groups)
    if n - k < 1 or k < 2:
        raise SystemExit(f"{a} and {b}: need two shapes and a shape with two runs in both")
    means = np.array([np.mean(g) for g in groups.values()])
    pairs = zip(groups.values(), means, strict=True)
    within = sum(((np.array(g) - m) ** 2).sum() for g, m in pairs) / (n - k)
    between = (sizes * (means - np.average(means, weights=sizes)) ** 2).sum()
    shape_var = max(0.0, (between - (k - 1) * within) / (n - (sizes**2).sum() / n))
    return float(np.sqrt(shape_var / 2)), float(np.sqrt(within / 2)), int(n)


def design_points(config: str, overrides: list[str]) -> list[dict]:
    """The ladder's runs as the analysis reads them, without a loss: N with the head, D,
    counted C and budget (as ``jobs`` records them), and the shape."""
    cfg = load_config(config, overrides)
    vocab = TOKENIZER_VOCAB[cfg.tokenizer]
    return [
        {
            "shape": spec.shape,
            "N_with_head": params_with_head(spec.shape, vocab),
            "D": spec.tokens,
            "C_counted": flops_per_token_counted(spec.shape, vocab, cfg.context) * spec.tokens,
            "budget": spec.budget,
        }
        for spec in cfg.runs()
    ]


def checks(
    points: list[dict], bootstrap: int, a_width: float, window: int | None = None
) -> dict[str, bool]:
    """The sweep's checks on one drawn ladder (``window``: the config's ``isoflop_window``)."""
    a = analyse(points, n_key="N_with_head", bootstrap=0)  # the held-out check needs none
    col = {k: [p[k] for p in points] for k in ("N_with_head", "D", "loss", "C_counted", "budget")}
    iso = fit_isoflop(col["N_with_head"], col["D"], col["loss"], col["C_counted"],
                      budget=col["budget"], bootstrap=bootstrap, window=window)  # fmt: skip
    lo, hi = iso.N_opt.ci
    return {
        "held-out": a.heldout["max_abs_rel_err"] <= HELDOUT_TOLERANCE,
        "interior": all(p.interior for p in iso.profiles),
        "agree": lo <= a.optimal["a"] <= hi,
        f"a_ci<={a_width:g}": hi - lo <= a_width,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--law", default="reports/examples/quick/laws.json")
    p.add_argument("--noise", type=float, nargs=2, metavar=("SHAPE", "RUN"))
    p.add_argument("--noise-from", nargs=2, metavar=("RESULTS_A", "RESULTS_B"))
    p.add_argument("--sims", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--a-width", type=float, default=A_CI_WIDTH)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if (args.noise is None) == (args.noise_from is None):
        p.error("give one of --noise SHAPE RUN and --noise-from A B")
    if args.noise_from:
        shape_sd, run_sd, n = seed_noise(*args.noise_from)
        print(f"seed noise from {n} runs of two seeds: {100 * shape_sd:.2f}% a shape, "
              f"{100 * run_sd:.2f}% a run")  # fmt: skip
    else:
        shape_sd, run_sd = args.noise
    law = load_law(args.law)
    points = design_points(args.config, args.overrides)
    window = load_config(args.config, args.overrides).isoflop_window
    truth = np.array([float(law(q["N_with_head"], q["D"])) for q in points])
    shapes = sorted({q["shape"] for q in points}, key=lambda s: s.label)
    of_shape = np.array([shapes.index(q["shape"]) for q in points])
    rng = np.random.default_rng(args.seed)
    passed: dict[str, list[bool]] = defaultdict(list)
    for _ in range(args.sims):
        noise = shape_sd * rng.standard_normal(len(shapes))[of_shape]
        noise += run_sd * rng.standard_normal(len(points))
        draw = [{**q, "loss": float(x)} for q, x in zip(points, truth * np.exp(noise), strict=True)]
        got = checks(draw, args.bootstrap, args.a_width, window)
        for name, ok in {**got, "all": all(got.values())}.items():
            passed[name].append(ok)
    flops = sum(q["C_counted"] for q in points)
    print(f"{args.config} {' '.join(args.overrides)}: {len(points)} runs, {flops:.3g} counted "
          f"FLOPs, {args.sims} draws")  # fmt: skip
    for name, oks in passed.items():
        rate = float(np.mean(oks))
        se = np.sqrt(rate * (1 - rate) / len(oks))
        print(f"  {name:<12} {100 * rate:5.1f}% ± {100 * se:.1f}")
    both = float(np.mean(passed["all"])) ** 2
    print(f"  two seeds both pass everything: {100 * both:.0f}%")


if __name__ == "__main__":
    main()
