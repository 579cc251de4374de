"""What several seeds of one ladder say that one seed cannot: whether its held-out miss is noise
(its sign changes from seed to seed) or a bias of the law's form (the same sign every seed), and
whether the loss keeps the Chinchilla form's separation of N and D.

    .venv/bin/python scripts/seeds.py tests/data/quick5_seed{0,1,2,3}.jsonl [SWEEP_DIR ...]

Each argument is one seed's sweep directory or results.jsonl, all of one config (``jaxscale
sweep CONFIG --set seed=S``). It prints:

- per seed, the sweep's own checks as ``jaxscale report`` makes them: the held-out budget's
  largest and mean relative error, approach 2's a with its interval beside approach 3's, the
  tokens per parameter at the largest budget, and the warnings;
- the sign test: under seed noise alone a seed's mean held-out error is as likely above zero as
  below (draws from a law with the measured noise: 0.00% ± 0.53%, README), so k seeds of n on
  a side named in advance have probability P(Binomial(n, 1/2) >= k), and on either side twice
  that;
- the seeds averaged run by run (``fit_points``): the held-out errors of the law fitted below,
  where the noise has shrunk and a bias has not;
- the gain from doubling D: per shape trained at D and about 2D, the drop in loss (mean over the
  seeds, with its standard error) beside the drop the law fitted to the averaged runs predicts.
  In L = E + A/N^α + B/D^β the drop B·D^-β·(1 - 2^-β) does not depend on N, so at one D every
  shape should gain alike; where larger shapes gain more, the form cannot extrapolate them.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from jaxscale.analysis import SweepAnalysis, analyse
from jaxscale.laws import Law, predict_loss
from jaxscale.report import n_key_of
from jaxscale.results import fit_points, read_records

DOUBLING = (1.8, 2.2)  # token ratios that count as "about 2D"


@dataclass(frozen=True)
class Gain:
    """The loss drop of one shape from D to about 2D, over the seeds, and the law's."""

    shape: str
    N: float
    D: float
    ratio: float
    drop: float  # mean over the seeds
    drop_se: float  # its standard error
    law_drop: float  # what the law fitted to the averaged runs predicts


def seed_points(path: str) -> list[dict[str, Any]]:
    """One seed's fit points."""
    return fit_points(read_records(path))[0]


def seed_rows(paths: list[str], bootstrap: int) -> list[dict[str, Any]]:
    """Each seed's checks as the sweep reports them."""
    rows = []
    for path in paths:
        points = seed_points(path)
        seed = points[-1].get("seed") or 0  # the bootstrap's, as the sweep's report draws it
        a = analyse(points, n_key=n_key_of(points), bootstrap=bootstrap, seed=seed)
        opt, iso = a.optimal or {}, a.isoflop
        rows.append({
            "path": path,
            "heldout": a.heldout["max_abs_rel_err"],
            "errors": [r["rel_err"] for r in a.heldout["runs"]],
            "mean": a.heldout["mean_rel_err"],
            "a2": iso.a if iso else None,
            "a2_ci": iso.N_opt.ci if iso else None,
            "a3": opt.get("a"),
            "tokens_per_param": opt.get("tokens_per_param"),
            "tokens_per_param_ci": opt.get("tokens_per_param_ci"),
            "warnings": a.warnings,
        })  # fmt: skip
    return rows


def sign_test(means: list[float]) -> tuple[int, float]:
    """(seeds whose mean held-out error has the majority's sign, the probability under noise
    alone of that many or more on that side; either side is twice that, up to 1)."""
    n = len(means)
    k = max(sum(m > 0 for m in means), sum(m < 0 for m in means))
    return k, float(binom.sf(k - 1, n, 0.5))


def averaged(paths: list[str]) -> SweepAnalysis:
    """The sweep's analysis (no bootstrap) of the runs averaged over the seeds."""
    points = fit_points([r for path in paths for r in read_records(path)])[0]
    return analyse(points, n_key=n_key_of(points), bootstrap=0)


def data_gains(paths: list[str], law: Law) -> list[Gain]:
    """The loss drop of each shape from D to about 2D, seed by seed, beside ``law``'s (the law
    fitted to the averaged runs: ``averaged(paths).fits["L_ND"].law``)."""
    per_seed = [{p["run"]: p for p in seed_points(path)} for path in paths]
    common = set.intersection(*(set(s) for s in per_seed))
    n_key = n_key_of(list(per_seed[0].values()))
    by_shape: dict[tuple, list[dict]] = {}
    for name in sorted(common):
        p = per_seed[0][name]
        by_shape.setdefault((p["n_layer"], p["d_model"], p["n_head"]), []).append(p)
    gains = []
    for runs in by_shape.values():
        runs.sort(key=lambda p: p["D"])
        for lo, hi in itertools.pairwise(runs):
            ratio = hi["D"] / lo["D"]
            if not DOUBLING[0] <= ratio <= DOUBLING[1]:
                continue
            drops = [s[lo["run"]]["loss"] - s[hi["run"]]["loss"] for s in per_seed]
            n = lo[n_key]
            before, after = predict_loss(law, [n, n], [lo["D"], hi["D"]])
            gains.append(Gain(
                shape=lo["run"].split("_")[0], N=n, D=lo["D"], ratio=ratio,
                drop=float(np.mean(drops)),
                drop_se=float(np.std(drops, ddof=1) / np.sqrt(len(drops))),
                law_drop=float(before - after),
            ))  # fmt: skip
    return sorted(gains, key=lambda g: (g.D, g.N))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="one sweep directory or results.jsonl per seed")
    p.add_argument("--bootstrap", type=int, default=400, help="resamples (the sweep's 400)")
    args = p.parse_args()
    if len(args.results) < 2:
        p.error("give two or more seeds' results (standard errors need two)")
    rows = seed_rows(args.results, args.bootstrap)
    print(
        "per seed: held-out max |err| (the runs' errors; mean), approach 2's a [95%] against "
        "approach 3's, tokens per parameter at the largest budget, warnings"
    )
    for r in rows:
        errs = ", ".join(f"{100 * e:+.1f}" for e in r["errors"])
        a2 = f"{r['a2']:.3f} [{r['a2_ci'][0]:.3f}, {r['a2_ci'][1]:.3f}]" if r["a2_ci"] else "-"
        tpp = r["tokens_per_param"]
        tpp_ci = r["tokens_per_param_ci"] or [float("nan")] * 2
        print(f"  {r['path']}: {100 * r['heldout']:.2f}% ({errs}; {100 * r['mean']:+.2f}%)  "
              f"a {a2} vs {r['a3']:.3f}  {tpp:.0f} [{tpp_ci[0]:.0f}, {tpp_ci[1]:.0f}] t/p  "
              f"{len(r['warnings'])} warnings")  # fmt: skip
    k, prob = sign_test([r["mean"] for r in rows])
    print(
        f"sign test: {k} of {len(rows)} seeds' laws miss on one side (under noise alone "
        f"P = {prob:.3g} on a side named in advance, {min(1.0, 2 * prob):.3g} on either)"
    )
    pooled = averaged(args.results)
    h = pooled.heldout
    print(f"seeds averaged: held-out max {100 * h['max_abs_rel_err']:.2f}%, mean "
          f"{100 * h['mean_rel_err']:+.2f}%; the law fitted to every run is within "
          f"{100 * h['full_fit_max_abs_rel_err']:.2f}% of them")  # fmt: skip
    print(
        "gain from doubling D (mean over seeds ± se) against the law fitted to the averaged "
        "runs, which gives every size the same gain at one D:"
    )
    for g in data_gains(args.results, pooled.fits["L_ND"].law):
        print(f"  {g.shape:<10} N={g.N:.3g}  D {g.D:.3g} x{g.ratio:.2f}: {g.drop:.3f} ± "
              f"{g.drop_se:.3f}  law {g.law_drop:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
