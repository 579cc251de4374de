"""scripts/seeds.py: the sign test's exact probabilities; on seeds drawn from an additive law
every size gains alike from doubling D, as the law says; on the real quick ladder's seeds the
larger models gain more than the law allows, and every seed's law misses its held-out budget on
the same side."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxscale.laws import Chinchilla

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("seeds", ROOT / "scripts" / "seeds.py")
seeds = importlib.util.module_from_spec(_spec)
sys.modules["seeds"] = seeds  # its dataclass looks its module up
_spec.loader.exec_module(seeds)

QUICK = [str(ROOT / "tests" / "data" / f"quick5_seed{s}.jsonl") for s in range(7)]


@pytest.mark.parametrize(
    ("means", "k", "prob"),
    [([0.01, 0.02, 0.005, 0.01], 4, 1 / 16), ([0.01, -0.02, 0.005, -0.01], 2, 11 / 16),
     ([-0.01, -0.02, -0.005], 3, 1 / 8)],
)  # fmt: skip
def test_the_sign_test_is_the_binomial_tail(means: list[float], k: int, prob: float) -> None:
    assert seeds.sign_test(means) == (k, pytest.approx(prob))


def test_on_seeds_drawn_from_an_additive_law_each_gain_from_data_is_its(
    tmp_path: Path,
) -> None:
    """Three seeds of an IsoFLOP ladder (budgets 2x apart, C = 6ND) drawn from a Chinchilla law
    with 0.2% noise: the law fitted to them gives each shape's gain from doubling D as the true
    law does, and each measured gain is the law's within the noise."""
    true = Chinchilla(E=1.5, A=400.0, B=1200.0, alpha=0.34, beta=0.30)
    widths = {64: 3e6, 96: 7e6, 128: 1.2e7, 192: 2.7e7, 256: 4.8e7}  # d_model: N
    rng = np.random.default_rng(0)
    paths = []
    for seed in range(3):
        lines = []
        for C in 6e16 * 2.0 ** np.arange(4):
            for width, N in widths.items():
                D = C / (6 * N)
                if not 3 <= D / N <= 300:
                    continue
                loss = float(true(N, D)) * np.exp(rng.normal(0, 0.002))
                rec = {"run": f"d{width}_D{D:.4g}", "N": N, "D": D, "C": C, "budget": C,
                       "loss": loss, "n_layer": 4, "d_model": width, "n_head": 4}  # fmt: skip
                lines.append(json.dumps(rec))
        paths.append(tmp_path / f"seed{seed}.jsonl")
        paths[-1].write_text("\n".join(lines) + "\n")
    paths = [str(p) for p in paths]
    gains = seeds.data_gains(paths, seeds.averaged(paths).fits["L_ND"].law)
    assert len(gains) >= 8
    for g in gains:
        before, after = float(true(g.N, g.D)), float(true(g.N, g.D * g.ratio))
        assert g.law_drop == pytest.approx(before - after, rel=0.05)
        noise = 0.002 * np.hypot(before, after) / np.sqrt(3)  # the drop's sd over 3 seeds
        assert abs(g.drop - g.law_drop) < 4 * noise


def test_the_quick_ladders_larger_models_gain_more_from_data_than_its_law_allows() -> None:
    """Real runs: seeds 0-6 of configs/quick.yaml (seeds 4-6 trained after seeds 0-3 had shown
    the one-sided miss, to test it). At about one D the larger shape gains more from a doubling
    than the law fitted to the averaged runs says, by more than twice its standard error over
    the seeds, and more than the smaller shape does beside the law (width 40 against 24 from
    1.2-1.3M tokens, 32 against 20 from 1.7M). Every seed's law predicts its held-out budget
    too high (under noise alone P = 1/128 on that side), and so does the law fitted below the
    averaged runs, where the law fitted to all of them follows those runs."""
    averaged = seeds.averaged(QUICK)
    law = averaged.fits["L_ND"].law
    gains = {(g.shape, round(g.D, -5)): g for g in seeds.data_gains(QUICK, law)}
    pairs = [(("L2-d40-h2", 1.2e6), ("L2-d24-h2", 1.3e6)),
             (("L2-d32-h2", 1.7e6), ("L2-d20-h2", 1.7e6))]  # fmt: skip
    for larger, smaller in pairs:
        big, small = gains[larger], gains[smaller]
        assert big.N > small.N and abs(np.log(big.D / small.D)) < 0.1
        assert big.drop - big.law_drop > 2 * big.drop_se
        beyond = (big.drop - big.law_drop) - (small.drop - small.law_drop)
        assert beyond > 2 * np.hypot(big.drop_se, small.drop_se)
    rows = seeds.seed_rows(QUICK, bootstrap=0)
    means = [r["mean"] for r in rows]
    assert all(m > 0.005 for m in means) and seeds.sign_test(means) == (7, 1 / 128)
    held = averaged.heldout
    assert held["mean_rel_err"] > 0.009 and held["full_fit_max_abs_rel_err"] < 0.01
