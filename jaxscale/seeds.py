"""What several seeds of one ladder say that one seed cannot: whether its held-out miss is noise
(its sign changes from seed to seed) or a bias of the law's form (the same sign every seed), and
whether the loss keeps the Chinchilla form's separation of N and D.

Each input is one seed's sweep (``jaxscale sweep CONFIG --set seed=S``), all of one config;
``compare_seeds`` gives:

- per seed, the sweep's own checks as ``jaxscale report`` makes them (its bootstrap drawn with
  that seed, as the sweep's report draws it): the held-out budget's largest and mean relative
  error (and Kaplan's coupled law's largest, refitted the same way: does another form
  extrapolate?), approach 2's a with its interval beside approach 3's, the tokens per
  parameter at the largest budget, and the warnings;
- the sign test: under seed noise alone a seed's mean held-out error is as likely above zero as
  below, so k seeds of n on a side named in advance have probability P(Binomial(n, 1/2) >= k),
  and on either side twice that;
- the seeds averaged run by run (``fit_points``): the held-out errors of the law fitted below,
  where the noise has shrunk and a bias has not;
- the gain from doubling D: per shape trained at D and about 2D, the drop in loss (mean over the
  seeds, with its standard error) beside the drop the law fitted to the averaged runs predicts.
  In L = E + A/N^α + B/D^β the drop B·D^-β·(1 - 2^-β) does not depend on N, so at one D every
  shape should gain alike; where larger shapes gain more, the form cannot extrapolate them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict
from scipy.stats import binom

from jaxscale.analysis import SweepAnalysis
from jaxscale.errors import UserError
from jaxscale.heldout import HELDOUT_TOLERANCE, KAPLAN_FORM
from jaxscale.laws import Law, predict_loss
from jaxscale.report import PROVENANCE_KEYS, analyse_points, n_key_of
from jaxscale.results import check_fields, fit_points, read_records

DOUBLING = (1.8, 2.2)  # token ratios that count as "about 2D"
FIELDS = ("run", "N", "D", "loss", "budget")  # what the comparison reads of every record
# config keys that seeds of one config may differ in: the seeds, and how the work was packed
# and checkpointed (a pack trains each run as it would alone)
SEED_FREE = frozenset({"seed", "seeds", "pack", "checkpoint_every"})


@dataclass(frozen=True)
class SeedCheck:
    """One seed's checks, as its sweep's report makes them."""

    source: str
    seeds: tuple[int, ...]  # the seeds its runs trained with (two with ``replicas: 2``)
    heldout: float  # the held-out budget's max |relative error|
    errors: tuple[float, ...]  # each held-out run's relative error
    mean: float  # their mean: its sign is what the sign test counts
    # Kaplan's coupled L(N, D) refitted on the same runs: its largest held-out miss (None: too
    # few runs for it), the check on whether another form extrapolates where this one does not
    kaplan: float | None
    a2: float | None  # approach 2's exponent a, None without two interior budgets
    a2_ci: tuple[float, float] | None
    a3: float | None  # approach 3's, from L(N, D) with FLOPs counted
    tokens_per_param: float | None  # at the largest budget
    tokens_per_param_ci: tuple[float, float] | None
    warnings: tuple[str, ...]
    provenance: dict[str, Any]  # corpus and config fingerprints, versions: its last run's


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


@dataclass(frozen=True)
class SeedsAnalysis:
    """``compare_seeds``' answer: each seed's checks, the sign test on their mean held-out
    errors, the analysis of the runs averaged over the seeds and each shape's gain from data."""

    seeds: list[SeedCheck]
    same_side: int  # seeds whose mean held-out error has the majority's sign
    p_named_side: float  # P(that many or more) under noise alone, on a side named in advance
    averaged: SweepAnalysis
    gains: list[Gain]

    @property
    def p_either_side(self) -> float:
        return min(1.0, 2 * self.p_named_side)

    @property
    def passing(self) -> int:
        """Seeds whose sweep passed every check (no warnings)."""
        return sum(not s.warnings for s in self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every seed's checks and provenance, the sign test, the averaged runs'
        held-out check and law, and the gains."""
        law = self.averaged.fits["L_ND"]
        return {
            "seeds": [dataclasses.asdict(c) for c in self.seeds],
            "passing": self.passing,
            "sign_test": {
                "same_side": self.same_side,
                "of": len(self.seeds),
                "p_named_side": self.p_named_side,
                "p_either_side": self.p_either_side,
            },
            "averaged": {"heldout": self.averaged.heldout, "L_ND": law.params},
            "gains": [dataclasses.asdict(g) for g in self.gains],
        }


def _point_key(point: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two seeds' runs the same point of the ladder: shape and planned tokens (run
    names gain ``_sS`` with replicas, so they do not)."""
    return (point.get("n_layer"), point.get("d_model"), point.get("n_head"), point["N"],
            round(point.get("D_target", point["D"])))  # fmt: skip


@dataclass(frozen=True)
class _Sweep:
    """One seed's sweep, read once: its records and its fit points."""

    source: str
    records: list[dict[str, Any]]
    points: list[dict[str, Any]]

    @property
    def seeds(self) -> tuple[int, ...]:
        ok = (r for r in self.records if r.get("status") == "ok")
        return tuple(sorted({int(r.get("seed") or 0) for r in ok}))

    @property
    def last(self) -> dict[str, Any]:
        return self.records[-1]


def _load(source: str) -> _Sweep:
    """One seed's sweep (a sweep directory or results.jsonl).

    Raises:
      UserError: no finished runs there, or records jaxscale's sweep did not write.
    """
    records = read_records(source)
    check_fields(records, FIELDS, source)
    points = fit_points(records)[0]
    if not points:
        raise UserError(f"{source}: no finished runs (a sweep directory or its results.jsonl)")
    return _Sweep(source, records, points)


def check_seed(source: str, bootstrap: int) -> SeedCheck:
    """One seed's checks, as ``jaxscale report`` makes them (``analyse_points``), with
    ``bootstrap`` resamples; the report's warning on repeated data aside.

    Raises:
      UserError: the ladder has no held-out budget to check (``budgets:`` in the config).
    """
    return _check(_load(source), bootstrap)


def _check(sweep: _Sweep, bootstrap: int) -> SeedCheck:
    a = analyse_points(sweep.points, bootstrap=bootstrap)
    if a.heldout is None:
        raise UserError(f"{sweep.source}: no held-out budget ({a.skipped.get('heldout')})")
    opt, iso = a.optimal or {}, a.isoflop
    return SeedCheck(
        source=sweep.source,
        seeds=sweep.seeds,
        heldout=a.heldout["max_abs_rel_err"],
        errors=tuple(r["rel_err"] for r in a.heldout["runs"]),
        mean=a.heldout["mean_rel_err"],
        kaplan=a.heldout["kaplan_max_abs_rel_err"],
        a2=iso.a if iso else None,
        a2_ci=tuple(iso.N_opt.ci) if iso and iso.N_opt.ci else None,
        a3=opt.get("a"),
        tokens_per_param=opt.get("tokens_per_param"),
        tokens_per_param_ci=tuple(opt["tokens_per_param_ci"])
        if opt.get("tokens_per_param_ci")
        else None,
        warnings=tuple(a.warnings),
        provenance={key: sweep.last.get(key) for key in PROVENANCE_KEYS},
    )


def sign_test(means: Sequence[float]) -> tuple[int, float]:
    """(seeds whose mean held-out error has the majority's sign, the probability under noise
    alone of that many or more on that side; either side is twice that, up to 1).

    Example:
      >>> sign_test([0.01, 0.02, -0.01])
      (2, 0.5)
    """
    n = len(means)
    k = max(sum(m > 0 for m in means), sum(m < 0 for m in means))
    return k, float(binom.sf(k - 1, n, 0.5))


def averaged(sweeps: Sequence[_Sweep]) -> SweepAnalysis:
    """The sweep's analysis (no bootstrap) of the runs averaged over the seeds."""
    points = fit_points([r for sweep in sweeps for r in sweep.records])[0]
    return analyse_points(points, bootstrap=0)


def data_gains(sweeps: Sequence[_Sweep], law: Law) -> list[Gain]:
    """The loss drop of each shape from D to about 2D, seed by seed, beside ``law``'s (the law
    fitted to the averaged runs: ``averaged(sweeps).fits["L_ND"].law``)."""
    per_seed = [{_point_key(p): p for p in sweep.points} for sweep in sweeps]
    common = set.intersection(*(set(s) for s in per_seed))
    n_key = n_key_of(list(per_seed[0].values()))
    by_shape: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for key in sorted(common, key=str):
        by_shape.setdefault(key[:4], []).append(per_seed[0][key])
    gains = []
    for runs in by_shape.values():
        runs.sort(key=lambda p: p["D"])
        for lo, hi in itertools.pairwise(runs):
            ratio = hi["D"] / lo["D"]
            if not DOUBLING[0] <= ratio <= DOUBLING[1]:
                continue
            drops = [s[_point_key(lo)]["loss"] - s[_point_key(hi)]["loss"] for s in per_seed]
            n = lo[n_key]
            before, after = predict_loss(law, [n, n], [lo["D"], hi["D"]])
            gains.append(Gain(
                shape=lo["run"].split("_")[0], N=n, D=lo["D"], ratio=ratio,
                drop=float(np.mean(drops)),
                drop_se=float(np.std(drops, ddof=1) / np.sqrt(len(drops))),
                law_drop=float(before - after),
            ))  # fmt: skip
    return sorted(gains, key=lambda g: (g.D, g.N))


def _corpus_of(sweep: _Sweep) -> tuple[str, str] | None:
    """(corpus, its fingerprint) of a sweep's last run; None where its records do not say."""
    fingerprint = sweep.last.get("corpus_fingerprint")
    return None if fingerprint is None else (str(sweep.last.get("corpus")), str(fingerprint))


def _settings_of(sweep: _Sweep) -> dict[str, Any] | None:
    """A sweep's config as its last run recorded it, flattened to dotted keys, less what may
    differ between seeds of one config (the seeds, and how the work was split and saved); None
    where its records carry no config."""
    config = sweep.last.get("config")
    if not isinstance(config, dict):
        return None
    return {k: v for k, v in flatten_dict(config, sep=".").items() if k not in SEED_FREE}


def _check_comparable(sweeps: Sequence[_Sweep]) -> None:
    """Refuse what would make the comparison meaningless: a seed given twice, seeds of configs
    that differ in more than the seed or trained on different corpora, or seeds that finished
    different runs."""
    first = sweeps[0]
    seen: dict[int, str] = {}
    ladder = {_point_key(p): p["run"] for p in first.points}
    corpus, settings = _corpus_of(first), _settings_of(first)
    for sweep in sweeps:
        source = sweep.source
        if None not in (settings, other_settings := _settings_of(sweep)):
            differ = sorted(k for k in settings.keys() | other_settings.keys()
                            if settings.get(k) != other_settings.get(k))  # fmt: skip
            if differ:
                shown = ", ".join(f"{k} ({other_settings.get(k)!r} against {settings.get(k)!r})"
                                  for k in differ[:3])  # fmt: skip
                raise UserError(
                    f"{source}'s config differs from {first.source}'s in more than the seed: "
                    f"{shown}: give seeds of one config"
                )
        if None not in (corpus, other := _corpus_of(sweep)) and other != corpus:
            raise UserError(
                f"{source} trained on corpus {other[0]} (fingerprint {other[1]}), "
                f"{first.source} on {corpus[0]} ({corpus[1]}): give seeds of one config"
            )
        for seed in sweep.seeds:
            if seed in seen:
                raise UserError(
                    f"{source} and {seen[seed]} both trained seed {seed}: give each seed once"
                )
            seen[seed] = source
        runs = {_point_key(p): p["run"] for p in sweep.points}
        if runs.keys() != ladder.keys():
            lacks = sorted(ladder[k] for k in ladder.keys() - runs.keys())
            extra = sorted(runs[k] for k in runs.keys() - ladder.keys())
            raise UserError(
                f"{source} and {first.source} finished different runs ({len(lacks)} only in the "
                f"second{', e.g. ' + lacks[0] if lacks else ''}; {len(extra)} only in the first"
                f"{', e.g. ' + extra[0] if extra else ''}): give seeds of one config with every "
                "run finished (run a seed's jaxscale sweep again to finish it)"
            )


def compare_seeds(
    sources: Sequence[str],
    *,
    bootstrap: int = 400,
    on_seed: Callable[[SeedCheck], None] = lambda check: None,
) -> SeedsAnalysis:
    """What several seeds of one ladder say together (the module docstring has the details).

    Under seed noise alone each seed's mean held-out error is as likely above zero as below, so
    k of n seeds on a side named in advance have probability P(Binomial(n, 1/2) >= k); a bias
    of the law's form puts every seed on one side. In L = E + A/N^α + B/D^β doubling D lowers
    every size's loss by B·D^-β·(1 - 2^-β), whatever its N: ``gains`` sets each shape's
    measured drop (mean over the seeds ± standard error) beside that.

    Args:
      sources: one sweep directory (or results.jsonl) per seed, all of one config.
      bootstrap: resamples behind each seed's intervals (the sweep's 400).
      on_seed: called with each seed's checks as soon as they are made.

    Raises:
      UserError: under two seeds, a seed given twice, seeds of different ladders, a source
        without finished runs or without a held-out budget.

    Example:
      >>> r = compare_seeds(["reports/quick", "reports/quick-s1"])   # doctest: +SKIP
      >>> r.same_side, r.p_named_side, r.averaged.heldout["mean_rel_err"]  # doctest: +SKIP
    """
    if len(sources) < 2:
        raise UserError("give two or more seeds' sweeps (a standard error needs two)")
    sweeps = [_load(source) for source in sources]  # each read once
    _check_comparable(sweeps)
    checks = []
    for sweep in sweeps:
        checks.append(_check(sweep, bootstrap))
        on_seed(checks[-1])
    same_side, p = sign_test([c.mean for c in checks])
    pooled = averaged(sweeps)
    gains = data_gains(sweeps, pooled.fits["L_ND"].law)
    return SeedsAnalysis(checks, same_side, p, pooled, gains)


def seed_line(c: SeedCheck) -> str:
    """One seed's checks on a line, its warnings (if any) on the lines below."""
    errs = ", ".join(f"{100 * e:+.1f}" for e in c.errors)
    a2 = f"{c.a2:.3f} [{c.a2_ci[0]:.3f}, {c.a2_ci[1]:.3f}]" if c.a2 is not None and c.a2_ci else "-"
    a3 = f"{c.a3:.3f}" if c.a3 is not None else "-"
    tpp = "-"
    if c.tokens_per_param is not None:
        lo, hi = c.tokens_per_param_ci or (float("nan"), float("nan"))
        tpp = f"{c.tokens_per_param:.0f} [{lo:.0f}, {hi:.0f}]"
    seeds = ",".join(map(str, c.seeds))
    verdict = (f"{len(c.warnings)} warning{'s' * (len(c.warnings) > 1)}:" if c.warnings
               else "passes every check")  # fmt: skip
    kaplan = f"; Kaplan's form {100 * c.kaplan:.2f}%" if c.kaplan is not None else ""
    line = (f"seed {seeds} ({c.source}): held out {100 * c.heldout:.2f}% ({errs}; mean "
            f"{100 * c.mean:+.2f}%{kaplan})  a {a2} vs {a3}  {tpp} tokens/param  "
            f"{verdict}")  # fmt: skip
    return "\n".join([line, *(f"    {w}" for w in c.warnings)])


def seeds_summary(r: SeedsAnalysis) -> str:
    """The comparison after the seeds' lines: the sign test, the averaged runs, the gains."""
    h = r.averaged.heldout
    side = "high" if sum(c.mean > 0 for c in r.seeds) >= sum(c.mean < 0 for c in r.seeds) else "low"
    lines = [
        f"{r.passing} of {len(r.seeds)} seeds pass every check",
        f"sign test: {r.same_side} of {len(r.seeds)} seeds' laws predict their held-out runs too "
        f"{side} on average; under noise alone P = {r.p_named_side:.3g} on a side named in "
        f"advance, {r.p_either_side:.3g} on either",
        f"seeds averaged: the law fitted below predicts the held-out runs within "
        f"{100 * h['max_abs_rel_err']:.2f}% (mean {100 * h['mean_rel_err']:+.2f}%); the law "
        f"fitted to every run follows them within {100 * h['full_fit_max_abs_rel_err']:.2f}%",
        *_kaplan_line(r),
        "gain from doubling D (mean over the seeds ± standard error) beside the law fitted to "
        "the averaged runs, which gives every size the same gain at one D:",
    ]
    lines += [
        f"  {g.shape:<12} N={g.N:.3g}  from D={g.D:.3g} x{g.ratio:.2f}: {g.drop:.3f} ± "
        f"{g.drop_se:.3f}  law {g.law_drop:.3f}"
        for g in r.gains
    ]
    return "\n".join(lines)


def _kaplan_line(r: SeedsAnalysis) -> list[str]:
    """Whether Kaplan's coupled form, refitted below each seed's held-out budget, predicts it
    where the Chinchilla form does not (none: too few runs for it)."""
    misses = [c.kaplan for c in r.seeds if c.kaplan is not None]
    if not misses:
        return []
    within = sum(m <= HELDOUT_TOLERANCE for m in misses)
    return [
        f"another form: {KAPLAN_FORM}, refitted the same way, predicts the held-out runs "
        f"within {100 * HELDOUT_TOLERANCE:.0f}% with {within} of {len(misses)} seeds (its "
        f"largest misses {100 * min(misses):.2f}% to {100 * max(misses):.2f}%), the "
        f"Chinchilla form with {sum(c.heldout <= HELDOUT_TOLERANCE for c in r.seeds)} of "
        f"{len(r.seeds)}"
    ]
