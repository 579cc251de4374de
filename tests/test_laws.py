"""Laws as pytrees (jit, vmap, grad), JSON round trips, built-ins, and planning from a law."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale.errors import UserError
from jaxscale.laws import (
    Chinchilla,
    Coverage,
    Kaplan,
    KaplanC,
    KaplanD,
    KaplanN,
    OffsetPower,
    TestTime,
    budget_flops,
    compute_optimal,
    inference_optimal,
    load_law,
    predict_loss,
    save_laws,
    x64,
)

# (law, inputs) pairs; TestTime stays below its cap so that it is differentiable.
CASES = [
    (Chinchilla(1.69, 406.4, 410.7, 0.34, 0.28), (3e8, 6e9)),
    (Kaplan(8.8e13, 0.076, 5.4e13, 0.095), (3e8, 6e9)),
    (KaplanN(8.8e13, 0.076), (3e8,)),
    (KaplanD(5.4e13, 0.095), (6e9,)),
    (KaplanC(3.1e8, 0.05), (10.0,)),
    (OffsetPower(1.8, 450.0, 0.3), (1e7,)),
    (TestTime(0.01, 0.3), (1e6, 8.0)),
    (Coverage(-2.0, -0.4), (16.0,)),
]


def test_builtins_have_the_published_constants():
    assert load_law("chinchilla").params == {
        "E": 1.69,
        "A": 406.4,
        "B": 410.7,
        "alpha": 0.34,
        "beta": 0.28,
    }
    assert load_law("besiroglu2024").params["B"] == 2085.43
    assert load_law("KAPLAN2020").params["alpha_D"] == 0.095
    assert float(predict_loss(load_law("chinchilla"), 70e9, 1.4e12)) == pytest.approx(1.9366, 1e-4)


@pytest.mark.parametrize(("law", "x"), CASES, ids=lambda c: type(c).__name__)
def test_grad_is_a_law_of_derivatives_matching_finite_differences(law, x):
    with x64():
        x = tuple(jnp.asarray(v, dtype=jnp.float64) for v in x)
        law = jax.tree.map(lambda p: jnp.asarray(p, dtype=jnp.float64), law)
        grad = jax.grad(lambda l: l(*x))(law)
        assert type(grad) is type(law)
        for name, value in law.params.items():
            h = 1e-6 * max(abs(value), 1e-3)
            up = type(law)(**{**law.params, name: value + h})(*x)
            down = type(law)(**{**law.params, name: value - h})(*x)
            fd = float((up - down) / (2 * h))
            assert float(getattr(grad, name)) == pytest.approx(fd, rel=1e-5, abs=1e-10), name


def test_jit_and_vmap_over_a_stack_of_laws():
    laws = [Chinchilla(1.7 + 0.1 * i, 400.0, 400.0, 0.3, 0.3) for i in range(3)]
    stacked = jax.tree.map(lambda *p: jnp.stack([jnp.asarray(v) for v in p]), *laws)
    out = jax.jit(jax.vmap(lambda law: law(1e9, 1e10)))(stacked)
    expected = [float(law(1e9, 1e10)) for law in laws]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    assert jax.jit(lambda law: law(1e9, 1e10))(laws[0]) == pytest.approx(expected[0], rel=1e-6)


def test_test_time_law_is_capped_at_one():
    assert float(TestTime(0.5, 0.5)(100.0, 100.0)) == 1.0


def test_law_save_and_load_round_trip(tmp_path):
    law = Kaplan(1e13, 0.08, 2e13, 0.1)
    path = law.save(tmp_path / "law.json", note="x")
    assert json.loads(path.read_text())["form"] == "Kaplan"
    assert load_law(path) == law


def test_save_laws_keys_and_selection(tmp_path):
    a, b = OffsetPower(1.8, 400.0, 0.3), Chinchilla(1.7, 400.0, 400.0, 0.3, 0.3)
    path = save_laws(tmp_path / "laws.json", {"L_N": a, "L_ND": b}, sweep="quick")
    data = json.loads(path.read_text())
    assert data["sweep"] == "quick" and set(data["laws"]) == {"L_N", "L_ND"}
    assert load_law(path) == b  # L_ND by default
    assert load_law(path, name="L_N") == a
    save_laws(tmp_path / "one.json", {"L_D": a})
    assert load_law(tmp_path / "one.json") == a
    save_laws(tmp_path / "two.json", {"L_N": a, "L_D": a})
    with pytest.raises(UserError, match="L_N, L_D"):
        load_law(tmp_path / "two.json")
    with pytest.raises(UserError, match="no law 'nope'"):
        load_law(path, name="nope")


def test_unknown_law_name_is_a_user_error():
    with pytest.raises(UserError, match="chinchilla, besiroglu2024, kaplan2020"):
        load_law("gpt5")


def test_compute_optimal_with_hoffmanns_constants():
    al = compute_optimal(load_law("chinchilla"), 1e18)
    assert al.N_opt == pytest.approx(8.1e7, rel=0.02)
    assert al.D_opt == pytest.approx(2.1e9, rel=0.03)
    assert 6 * al.N_opt * al.D_opt == pytest.approx(1e18)
    assert al.a + al.b == pytest.approx(1.0)
    # The closed form is the minimum of the loss along C = 6ND.
    n = al.N_opt * np.array([0.9, 1.0, 1.1])
    assert np.argmin(predict_loss(load_law("chinchilla"), n, 1e18 / (6 * n))) == 1
    with pytest.raises(UserError):
        compute_optimal(load_law("kaplan2020"), 1e18)


def test_inference_optimal_trades_size_for_tokens_at_equal_loss():
    law = load_law("chinchilla")
    opt = compute_optimal(law, 1e22)
    inf = inference_optimal(law, 1e22, 1e13)
    assert inf["N"] < opt.N_opt and inf["D"] > opt.D_opt
    assert float(predict_loss(law, inf["N"], inf["D"])) == pytest.approx(opt.loss, rel=1e-6)
    assert inf["total_flops"] < inf["compute_optimal_total"]


def test_budget_flops_and_unknown_gpu():
    assert budget_flops("h100", 8, 720, 0.4) == pytest.approx(989e12 * 0.4 * 8 * 720 * 3600)
    with pytest.raises(UserError, match="H100, H200, A100, RTX4090, M3Max"):
        budget_flops("TPU", 1, 1)
