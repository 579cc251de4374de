"""Property-based tests (Hypothesis) over the command line and the public fit and plan functions.

Generated tables and arguments, valid and not, never end in a traceback: a command exits 0 or
prints one line and exits 2; a fitter returns finite parameters or raises a ``UserError``; every
law form survives a trip through a laws file. Example counts are bounded so CI stays fast, and
tables have a fixed number of rows so that their fits share one compiled solver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jaxscale.cli import main
from jaxscale.errors import UserError
from jaxscale.laws import (
    BUILTINS,
    Chinchilla,
    DataConstrained,
    compute_optimal,
    constrained_optimal,
    fit_chinchilla,
    fit_power,
    load_law,
    predict_loss,
    save_laws,
)
from jaxscale.laws.forms import FORMS
from jaxscale.laws.points import scaling_points
from jaxscale.tables import read_table

# JAXSCALE_EXAMPLES=10 runs ten times the examples, for a deeper search than CI's.
SCALE = int(os.environ.get("JAXSCALE_EXAMPLES", "1"))
FEW = settings(max_examples=12 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=40 * SCALE, deadline=None)
SMALL_GRID = {"a": (0.0, 5.0, 10.0), "b": (0.0, 5.0, 10.0), "e": (0.0, 1.0)}
ROWS = 12

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1e400", "abc", "", "1e-300"])
)


def run(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in this process: (exit status, stdout, stderr); any other exception propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_answered(code: int, err: str) -> None:
    """Success, or one line on stderr and exit status 2."""
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("jaxscale: error:") and err.count("\n") == 1, err


@st.composite
def tables(draw: st.DrawFn) -> str:
    """A CSV of ROWS runs under names people use, sometimes spoiled the ways real tables are."""
    n = np.repeat([1e6, 1e7, 1e8, 1e9], 3)
    d = np.tile([1e8, 1e9, 1e10], 4) * draw(st.floats(0.1, 10))
    law = Chinchilla(draw(st.floats(0.5, 3)), 400.0, 2000.0, draw(st.floats(0.2, 0.5)), 0.3)
    noise = np.exp(draw(st.lists(st.floats(-0.01, 0.01), min_size=ROWS, max_size=ROWS)))
    loss = predict_loss(law, n, d) * noise
    cells = [list(map(repr, r)) for r in zip(n.tolist(), d.tolist(), loss.tolist(), strict=True)]
    synonyms = (("N", "params"), ("D", "tokens"), ("loss", "val_loss"))
    header = [draw(st.sampled_from(names)) for names in synonyms]
    spoil = draw(st.sampled_from(["none", "nan", "text", "zero", "negative", "inf", "empty",
                                  "header", "one-size", "semicolons"]))  # fmt: skip
    rows = draw(st.lists(st.integers(0, ROWS - 1), min_size=2, max_size=2, unique=True))
    column = draw(st.integers(0, 2))
    value = {"nan": "nan", "text": "n/a", "zero": "0", "negative": "-1", "inf": "inf", "empty": ""}
    if spoil in value:
        for i in rows:
            cells[i][column] = value[spoil]
    elif spoil == "header":
        cells = []
    elif spoil == "one-size":
        for row in cells:
            row[0] = "1e6"
    sep = ";" if spoil == "semicolons" else ","
    return "\n".join(sep.join(r) for r in [header, *cells]) + "\n"


@FEW
@given(tables())
def test_fit_answers_every_table_with_finite_parameters_or_one_line(table: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "runs.csv", Path(tmp) / "fit.json"
        path.write_text(table)
        code, _, err = run(["fit", str(path), "--json", str(out)])
        assert_answered(code, err)
        if code == 0:
            params = json.loads(out.read_text())["params"]
            assert all(math.isfinite(v) for v in params.values()), params


columns = st.lists(st.floats(1.0, 1e12), min_size=ROWS, max_size=ROWS)


@MANY
@given(columns, columns, st.lists(st.floats(1e-2, 20.0), min_size=ROWS, max_size=ROWS))
def test_fitters_return_finite_parameters_or_refuse(N: list, D: list, loss: list) -> None:
    for fit in (
        lambda: fit_chinchilla(N, D, loss, grid=SMALL_GRID),
        lambda: fit_power(N, loss, grid={"a": (0.0, 5.0), "e": (0.0, 1.0)}),
    ):
        try:
            result = fit()
        except UserError:
            continue
        assert all(math.isfinite(v) for v in result.params.values()), result.params
        assert math.isfinite(result.objective)


@MANY
@given(
    st.sampled_from(["isoflop", "plan", "plan-gpu", "predict", "predict-U"]),
    numbers,
    numbers,
    st.sampled_from(["chinchilla", "besiroglu2024", "kaplan2020", "muennighoff2023"]),
)
@example("isoflop", 5e-324, 0.0, "chinchilla")  # N_opt underflowed to 0: a traceback, once
def test_planning_commands_answer_any_numbers(command: str, x: object, y: object, law: str):
    x, y = str(x), str(y)
    argv = {
        "isoflop": ["isoflop", "--C", x, "--law", law],
        "plan": ["plan", "--C", x, "--unique-tokens", y, "--law", law],
        "plan-gpu": ["plan", "--gpu", "A100", "--hours", x, "--price", y, "--law", law],
        "predict": ["predict", "--N", x, "--D", y, "--law", law],
        "predict-U": ["predict", "--N", "1e9", "--D", x, "--U", y, "--law", law],
    }[command]
    code, _, err = run(argv)
    assert_answered(code, err)


@st.composite
def laws(draw: st.DrawFn) -> object:
    form = FORMS[draw(st.sampled_from(sorted(FORMS)))]
    names = [f.name for f in dataclasses.fields(form)]
    return form(**{k: draw(st.floats(-1e6, 1e6, allow_subnormal=False)) for k in names})


@MANY
@given(laws())
def test_every_form_survives_a_laws_file(law: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "law.json", Path(tmp) / "laws.json"
        law.save(one, note="kept")
        save_laws(many, {"L": law})
        for back in (load_law(one), load_law(many)):
            assert type(back) is type(law) and back.params == law.params


chinchillas = st.builds(
    Chinchilla,
    E=st.floats(0.0, 3.0),
    A=st.floats(1.0, 1e5),
    B=st.floats(1.0, 1e5),
    alpha=st.floats(0.05, 1.0),
    beta=st.floats(0.05, 1.0),
)
constrained = st.builds(
    DataConstrained,
    E=st.floats(0.5, 3.0),
    A=st.floats(10.0, 1e4),
    B=st.floats(10.0, 1e4),
    alpha=st.floats(0.1, 0.8),
    beta=st.floats(0.1, 0.8),
    R_D_star=st.floats(0.5, 100.0),
    R_N_star=st.floats(0.5, 100.0),
)


@MANY
@given(chinchillas, st.floats(1e10, 1e26))
def test_the_compute_optimum_spends_the_budget_and_beats_its_neighbours(law, C) -> None:
    al = compute_optimal(law, C)
    assume(1 < al.N_opt < 1e15 and 1 < al.D_opt < 1e15)
    assert math.isclose(6 * al.N_opt * al.D_opt, C, rel_tol=1e-9)
    for f in (0.5, 2.0):
        n = al.N_opt * f
        assert al.loss <= float(predict_loss(law, n, C / (6 * n))) * (1 + 1e-12)


@MANY
@given(constrained, st.floats(1e12, 1e25), st.floats(1e6, 1e13))
def test_the_constrained_optimum_spends_the_budget_and_beats_its_neighbours(law, C, U) -> None:
    try:
        al = constrained_optimal(law, C, U)
    except UserError as e:  # an optimum past 1e-12..1e12 tokens per parameter is refused
        assert "lies beyond" in str(e)
        return
    assert math.isclose(6 * al.N_opt * al.D_opt, C, rel_tol=1e-9)
    assert math.isclose(al.epochs, al.D_opt / U, rel_tol=1e-12) and math.isfinite(al.loss)
    for f in (0.8, 1.25):
        n = al.N_opt * f
        assert al.loss <= float(predict_loss(law, n, C / (6 * n), U)) + 1e-9


sizes = st.floats(1e5, 1e11)


@MANY
@given(constrained, sizes, sizes, sizes, sizes)
def test_repeats_never_help_and_more_unique_data_never_hurts(law, N, D, U, more) -> None:
    base = float(predict_loss(law.base, N, D))
    loss, with_more = (float(predict_loss(law, N, D, u)) for u in (U, U + more))
    assert math.isfinite(loss) and loss >= base - 1e-9
    assert with_more <= loss + 1e-9


def test_the_published_laws_are_all_loadable_by_name() -> None:
    for name, law in BUILTINS.items():
        assert load_law(name) is law


@MANY
@given(
    st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    st.sampled_from([".csv", ".jsonl", ".json", ".txt"]),
)
def test_any_file_is_read_or_refused_in_one_line(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"table{suffix}"
        path.write_bytes(content)
        try:
            points = scaling_points(read_table(path), {})
        except UserError as e:
            assert "\n" not in str(e)
        else:
            assert all(np.all(np.isfinite(v) & (v > 0)) for v in points.columns.values())
