"""A sweep's checks on ladders with a known answer: a ladder drawn from a Chinchilla law passes
them all; one whose largest budget breaks the law, or whose corpus' entropy is not the fitted E,
is warned about; and the real quick ladders: the committed one passes, its seed-1 twin misses with
a warning that says how to tell noise from a bend, and the one trained under weight decay misses
by its form."""

from pathlib import Path

import numpy as np
import pytest

from jaxscale.analysis import analyse
from jaxscale.laws import Chinchilla
from jaxscale.report import summary
from jaxscale.results import fit_points, read_records

TRUE = Chinchilla(E=1.5, A=400.0, B=1200.0, alpha=0.34, beta=0.30)


def isoflop_points(noise: float = 0.002, top_shift: float = 0.0) -> list[dict]:
    """5 budgets 4x apart x 7 sizes around each budget's optimum, C = 6ND; the largest budget's
    losses multiplied by (1 + top_shift)."""
    rng = np.random.default_rng(0)
    budgets = 1e18 * 4.0 ** np.arange(5)
    points = []
    for C in budgets:
        n_opt = (C / 6) ** (TRUE.beta / (TRUE.alpha + TRUE.beta))  # roughly central
        for N in n_opt * np.geomspace(1 / 8, 8, 7):
            D = C / (6 * N)
            loss = float(TRUE(N, D)) * np.exp(rng.normal(0, noise))
            loss *= 1 + (top_shift if budgets[-1] == C else 0.0)
            points.append({"N": N, "D": D, "C": C, "loss": loss, "budget": C})
    return points


def test_a_ladder_drawn_from_the_law_passes_every_check() -> None:
    a = analyse(isoflop_points(), entropy=TRUE.E, bootstrap=50)
    assert a.warnings == []
    assert a.heldout["max_abs_rel_err"] < 0.01
    assert a.heldout["full_fit_max_abs_rel_err"] < 0.01
    assert abs(a.heldout["mean_rel_err"]) <= a.heldout["max_abs_rel_err"]
    assert a.agreement["agree"]
    assert a.truth["rel_err"] == pytest.approx(0.0, abs=0.05)
    lo, hi = a.fits["L_ND"].ci["alpha"]
    assert lo <= TRUE.alpha <= hi
    expected_a = TRUE.beta / (TRUE.alpha + TRUE.beta)
    assert a.optimal["a"] == pytest.approx(expected_a, abs=0.03)


def test_a_largest_budget_off_the_law_fails_the_held_out_check() -> None:
    a = analyse(isoflop_points(top_shift=-0.05), bootstrap=0)
    assert a.heldout["max_abs_rel_err"] > 0.04
    assert a.heldout["mean_rel_err"] > 0.04  # every held-out run below its prediction
    # off the law's form: the law that saw the shifted runs still misses them, and says so
    assert a.heldout["full_fit_max_abs_rel_err"] > 0.02
    assert any("does not extrapolate" in w and "form does not follow" in w for w in a.warnings)


def test_a_fitted_floor_away_from_the_known_entropy_is_a_warning() -> None:
    a = analyse(isoflop_points(), entropy=1.2 * TRUE.E, bootstrap=0)
    assert a.truth["rel_err"] == pytest.approx(1 / 1.2 - 1, abs=0.05)
    assert any("exact entropy" in w for w in a.warnings)


def test_the_committed_quick_ladder_predicts_its_held_out_budget_within_two_percent() -> None:
    """Real runs: reports/examples/quick (seed 0). The law fitted below the largest budget
    predicts its 5 runs within 2%, the law fitted to all 20 follows them within 2% too (both
    miss most on width 24 at 9M tokens, which gained less from its last 2.6M tokens than the
    law allows), and the sweep has nothing to warn about."""
    example = Path(__file__).resolve().parents[1] / "reports" / "examples" / "quick"
    # as the sweep does, with its 400 resamples (conftest lowers the default for other tests)
    a = analyse(fit_points(read_records(example))[0], n_key="N_with_head", bootstrap=400)
    h = a.heldout
    assert len(h["runs"]) == 5 and h["max_abs_rel_err"] < 0.02
    assert h["full_fit_max_abs_rel_err"] < 0.02
    assert all(p.interior for p in a.isoflop.profiles) and not a.warnings


def test_the_quick_ladders_held_out_miss_is_warned_about_with_what_tells_its_causes_apart() -> None:
    """Real runs: the quick ladder as it was trained with 4 windows of 128 bytes a step, seeds 1
    and 2 (tests/data; seed 2's runs came from a sweep of six sizes a budget, which trains these
    20 bit for bit). Seed 1's law, fitted below the largest budget, misses it by more than 2%
    while the law fitted to every run follows it: its warning names both causes (seed noise, or
    a bend beyond the fitted budgets) and how to tell them apart. Seed 2's approach-2 interval is
    too wide to test approach 3 against, and its warning names the budget to fix. (That every
    seed misses on one side is tests/test_seeds.py's.)"""
    data = Path(__file__).parent / "data"
    seeds = [read_records(data / f"quick_ctx128_seed{s}.jsonl") for s in (1, 2)]
    a = analyse(fit_points(seeds[0])[0], n_key="N_with_head", bootstrap=0)
    h = a.heldout
    assert h["max_abs_rel_err"] > 0.02 and h["full_fit_max_abs_rel_err"] < 0.02
    (warning,) = [w for w in a.warnings if "does not extrapolate" in w]
    assert f"{100 * h['mean_rel_err']:.1f}% too high on average" in warning
    assert "replicas: 2" in warning and "the same sign with every seed" in warning
    # seed 2's smallest budget has its minimum near its smallest size: approach 2's interval on
    # a is too wide to test approach 3 against, and the warning names that budget
    wide = analyse(fit_points(seeds[1])[0], n_key="N_with_head", bootstrap=200)
    lo, hi = wide.isoflop.N_opt.ci
    assert hi - lo > 0.25 and lo <= wide.agreement["a_chinchilla"] <= hi
    (warning,) = [w for w in wide.warnings if "too wide" in w]
    assert "least certain minimum is C=2.5e+11's" in warning


def test_on_the_quick_ladder_under_weight_decay_the_form_not_the_fit_misses_the_held_out_budget():
    """Real runs: the quick ladder as it was trained with AdamW weight decay 0.1 (the 20 records
    of reports/examples/quick at commit c958830, in tests/data). The Chinchilla law fitted below
    the largest budget misses it by more than 2%, the law fitted to every run misses it too, and
    Kaplan's coupled law without a floor, refitted on the same 15 runs, predicts it within 2%;
    the warning and the sweep's summary say so."""
    records = read_records(Path(__file__).parent / "data" / "quick_weight_decay_0.1.jsonl")
    a = analyse(fit_points(records)[0], n_key="N_with_head", bootstrap=0)
    h = a.heldout
    assert h["max_abs_rel_err"] > 0.02 and h["full_fit_max_abs_rel_err"] > 0.02
    assert h["kaplan_max_abs_rel_err"] < 0.015
    (warning,) = [w for w in a.warnings if "does not extrapolate" in w]
    assert "form does not follow" in warning and "Kaplan" in warning
    pct = f"{100 * h['kaplan_max_abs_rel_err']:.2f}%"
    assert f"(Kaplan's L(N, D) on the same runs: {pct})" in summary(a)  # the sweep's last lines
