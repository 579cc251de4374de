"""jaxscale.seeds (``jaxscale seeds``): the sign test's exact probabilities; on replicated seeds
drawn from an additive law every size gains alike from doubling D, as the law says; every seed
of the shipped quick ladder predicts its held-out budget; on the seeds of the ladder as it was
trained before (4 windows of 128 bytes a step) the larger models gained more than the law
allows, and every seed's law missed its held-out budget on the same side; the command prints
what the library computes."""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jaxscale.errors import UserError
from jaxscale.laws import Chinchilla
from jaxscale.results import read_records
from jaxscale.seeds import SeedsAnalysis, check_seed, compare_seeds, sign_test

DATA = Path(__file__).resolve().parent / "data"
QUICK = [str(DATA / f"quick_seed{s}.jsonl") for s in range(7)]
EXAMPLE = DATA.parents[1] / "reports" / "examples" / "quick-seeds"
# the quick ladder as it was trained before, with 4 windows of 128 bytes a step
CTX128 = [str(DATA / f"quick_ctx128_seed{s}.jsonl") for s in range(7)]
EXAMPLE_CTX128 = DATA.parents[1] / "reports" / "examples" / "quick-ctx128-seeds"


def committed_comparison(example: Path, result: SeedsAnalysis, passing: int) -> dict:
    """The committed ``seeds.json`` under ``example`` (a README figure's numbers), asserted to be
    ``result`` at the sweep's 400 resamples: the same errors, gains and averaged held-out check,
    with ``passing`` seeds passing every check."""
    saved = json.loads((example / "seeds.json").read_text())
    assert [s["errors"] for s in saved["seeds"]] == [list(c.errors) for c in result.seeds]
    assert saved["gains"] == [dataclasses.asdict(g) for g in result.gains]
    assert saved["passing"] == passing
    assert saved["averaged"]["heldout"] == result.averaged.heldout
    return saved


@pytest.mark.parametrize(
    ("means", "k", "prob"),
    [([0.01, 0.02, 0.005, 0.01], 4, 1 / 16), ([0.01, -0.02, 0.005, -0.01], 2, 11 / 16),
     ([-0.01, -0.02, -0.005], 3, 1 / 8)],
)  # fmt: skip
def test_the_sign_test_is_the_binomial_tail(means: list[float], k: int, prob: float) -> None:
    assert sign_test(means) == (k, pytest.approx(prob))


def test_on_replicated_seeds_drawn_from_an_additive_law_each_gain_from_data_is_its(
    tmp_path: Path,
) -> None:
    """Three sweeps of an IsoFLOP ladder (budgets 2x apart, C = 6ND), each with two replicas
    (seeds 2s and 2s + 1, run names ending _sS, as ``replicas: 2`` names them), drawn from a
    Chinchilla law with 0.2% noise: the sweeps are compared point by point across their run
    names, the law fitted to them gives each shape's gain from doubling D as the true law does,
    and each measured gain is the law's within the noise."""
    true = Chinchilla(E=1.5, A=400.0, B=1200.0, alpha=0.34, beta=0.30)
    widths = {64: 3e6, 96: 7e6, 128: 1.2e7, 192: 2.7e7, 256: 4.8e7}  # d_model: N
    rng = np.random.default_rng(0)
    paths = []
    for sweep in range(3):
        lines = []
        for C in 6e16 * 2.0 ** np.arange(4):
            for width, N in widths.items():
                D = C / (6 * N)
                if not 3 <= D / N <= 300:
                    continue
                for seed in (2 * sweep, 2 * sweep + 1):
                    loss = float(true(N, D)) * np.exp(rng.normal(0, 0.002))
                    rec = {"run": f"d{width}_D{D:.4g}_s{seed}", "status": "ok", "N": N, "D": D,
                           "C": C, "budget": C, "loss": loss, "seed": seed, "n_layer": 4,
                           "d_model": width, "n_head": 4}  # fmt: skip
                    lines.append(json.dumps(rec))
        paths.append(tmp_path / f"sweep{sweep}.jsonl")
        paths[-1].write_text("\n".join(lines) + "\n")
    result = compare_seeds([str(p) for p in paths], bootstrap=0)
    assert [c.seeds for c in result.seeds] == [(0, 1), (2, 3), (4, 5)]
    assert len(result.gains) >= 8
    for g in result.gains:
        before, after = float(true(g.N, g.D)), float(true(g.N, g.D * g.ratio))
        assert g.law_drop == pytest.approx(before - after, rel=0.05)
        noise = 0.002 / np.sqrt(2) * np.hypot(before, after) / np.sqrt(3)  # over 3 sweeps
        assert abs(g.drop - g.law_drop) < 4 * noise


def test_every_seed_of_the_quick_ladder_predicts_its_held_out_budget_within_two_percent() -> None:
    """Real runs: seeds 0-6 of configs/quick.yaml as shipped, 8 windows of 64 bytes a step
    (seeds 2-6 trained after seeds 0 and 1 had passed, to test the design). Every seed's law
    predicts its held-out budget within 2%, and 6 of 7 pass every check (the committed
    comparison, at the sweep's 400 resamples: seed 5's B is undetermined). Most laws still
    predict too high, but no longer beyond what noise gives (6 of 7, P = 1/16 on that side),
    and the law fitted below the averaged runs misses them by under 1%, +0.4% on average,
    half the bias of 4 windows of 128 a step (below)."""
    result = compare_seeds(QUICK, bootstrap=0)
    assert [c.seeds for c in result.seeds] == [(s,) for s in range(7)]
    assert all(c.heldout < 0.02 for c in result.seeds)
    assert (result.same_side, result.p_named_side) == (6, 1 / 16)
    held = result.averaged.heldout
    assert held["max_abs_rel_err"] < 0.01 and 0 < held["mean_rel_err"] < 0.005
    saved = committed_comparison(EXAMPLE, result, passing=6)
    (failing,) = [s for s in saved["seeds"] if s["warnings"]]
    assert failing["seeds"] == [5] and "standard errors larger" in failing["warnings"][0]


def test_at_4_windows_of_128_the_larger_models_gained_more_from_data_than_the_law_allows():
    """Real runs: seeds 0-6 of configs/quick.yaml as it was trained with 4 windows of 128 bytes
    a step (seeds 4-6 trained after seeds 0-3 had shown the one-sided miss, to test it). At
    about one D the larger shape gains more from a doubling than the law fitted to the averaged
    runs says, by more than twice its standard error over the seeds, and more than the smaller
    shape does beside the law (width 40 against 24 from 1.2-1.3M tokens, 32 against 20 from
    1.7M). Every seed's law predicts its held-out budget too high (under noise alone P = 1/128
    on that side), and so does the law fitted below the averaged runs, where the law fitted to
    all of them follows those runs."""
    result = compare_seeds(CTX128, bootstrap=0)
    gains = {(g.shape, round(g.D, -5)): g for g in result.gains}
    pairs = [(("L2-d40-h2", 1.2e6), ("L2-d24-h2", 1.3e6)),
             (("L2-d32-h2", 1.7e6), ("L2-d20-h2", 1.7e6))]  # fmt: skip
    for larger, smaller in pairs:
        big, small = gains[larger], gains[smaller]
        assert big.N > small.N and abs(np.log(big.D / small.D)) < 0.1
        assert big.drop - big.law_drop > 2 * big.drop_se
        beyond = (big.drop - big.law_drop) - (small.drop - small.law_drop)
        assert beyond > 2 * np.hypot(big.drop_se, small.drop_se)
    assert [c.seeds for c in result.seeds] == [(s,) for s in range(7)]
    assert all(c.mean > 0.005 for c in result.seeds)
    assert (result.same_side, result.p_named_side) == (7, 1 / 128)
    held = result.averaged.heldout
    assert held["mean_rel_err"] > 0.009 and held["full_fit_max_abs_rel_err"] < 0.01
    # nor does Kaplan's coupled form, refitted below each seed's held-out budget, extrapolate
    assert all(c.kaplan > 0.02 for c in result.seeds)
    # the committed example (README's figure) is this comparison, at the sweep's 400 resamples
    saved = committed_comparison(EXAMPLE_CTX128, result, passing=2)
    assert [s["kaplan"] for s in saved["seeds"]] == [c.kaplan for c in result.seeds]


def test_a_ladder_without_a_held_out_budget_is_refused(tmp_path: Path) -> None:
    """Seed 0's runs of the two lower budgets only: nothing is held out, so there is nothing to
    compare across seeds, and the refusal says why."""
    kept = [r for r in read_records(QUICK[0]) if r["budget"] < 1e12]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    with pytest.raises(UserError, match="no held-out budget"):
        check_seed(str(path), bootstrap=0)


def test_the_command_prints_each_seed_then_what_they_say_together(
    run_cli: Callable[..., int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``jaxscale seeds`` on seeds 0 and 1 of the 128-byte ladder: a line per seed with its
    held-out errors (seed 1's warning below it), then the count passing, the sign test and the
    averaged runs' held-out check, as ``compare_seeds`` computes them; the same in its JSON, and
    its figure."""
    json_path, png = tmp_path / "seeds.json", tmp_path / "seeds.png"
    argv = ["seeds", CTX128[0], CTX128[1], "--bootstrap", "20", "--json", str(json_path)]
    assert run_cli(*argv, "--plot", str(png)) == 0
    out = capsys.readouterr().out
    expected = compare_seeds(CTX128[:2], bootstrap=0)
    saved = json.loads(json_path.read_text())
    assert [s["heldout"] for s in saved["seeds"]] == [c.heldout for c in expected.seeds]
    assert saved["sign_test"] == {"same_side": 2, "of": 2, "p_named_side": 0.25,
                                  "p_either_side": 0.5}  # fmt: skip
    assert saved["averaged"]["heldout"] == expected.averaged.heldout
    assert len(saved["gains"]) == len(expected.gains) >= 8
    assert saved["seeds"][0]["provenance"]["config_fingerprint"] == "f1db171907dc"
    assert png.read_bytes().startswith(b"\x89PNG")
    seed_lines = [line for line in out.splitlines() if line.startswith("seed ")]
    assert [line.split(" (")[0] for line in seed_lines] == ["seed 0", "seed 1"]
    for line, check in zip(seed_lines, expected.seeds, strict=True):
        assert f"held out {100 * check.heldout:.2f}%" in line
        assert f"mean {100 * check.mean:+.2f}%; Kaplan's form {100 * check.kaplan:.2f}%" in line
    assert "misses its run L2-d64-h2_D1.594M by +2.7%" in out  # seed 1's warning
    assert "sign test: 2 of 2 seeds' laws predict their held-out runs too high" in out
    worst = max(c.kaplan for c in expected.seeds)
    assert f"with 0 of 2 seeds (its largest misses 3.12% to {100 * worst:.2f}%)" in out
    held = expected.averaged.heldout
    assert f"within {100 * held['max_abs_rel_err']:.2f}% (mean" in out
