"""The skills task: hidden per-skill addends, a Zipf-weighted training mixture, a disjoint
held-out set drawn uniformly over skills, and its exact checker against plain arithmetic."""

from __future__ import annotations

from collections import Counter

import pytest

from jaxscale.errors import DataError
from jaxscale.tasks import SKILL_NAMES, Problem, Task

SPEC = "addition:digits=3,format=reverse,skills=20,zipf=1.5,train=20000,test=400,val=100"


def _key(p: Problem) -> tuple[int | None, int]:
    return p.skill, p.a


def test_skill_problems_are_carry_free_sums_of_a_hidden_constant():
    task = Task.parse(SPEC)
    split = task.split()
    consts = task.constants
    assert len(set(consts)) == 20 and all(set(str(c)) <= set("01234") for c in consts)
    for p in split.test + split.train[:500]:
        assert p.b == consts[p.skill] and p.op == "+"
        assert set(f"{p.a:03d}") <= set("012345")  # digits 0..5: no column carries
        # the answer, checked against column-by-column addition without carries
        columns = [int(x) + int(y) for x, y in zip(f"{p.a:03d}", f"{p.b:03d}", strict=True)]
        assert all(c <= 9 for c in columns)
        assert p.answer == int("".join(map(str, columns))) == p.a + p.b
        prompt = task.prompt(p)
        assert prompt == f"\n{p.a:03d}+{SKILL_NAMES[p.skill]}=" and str(p.b) not in prompt[5:]
        text = task.completion(p)
        assert text == f"{p.a + p.b:03d}"[::-1] and task.check(p, text + "\n")
        assert not task.check(p, f"{(p.a + p.b + 1) % 1000:03d}"[::-1])
        assert len(text) + 1 <= task.max_completion()


def test_skill_split_is_disjoint_zipf_weighted_and_fingerprinted():
    task = Task.parse(SPEC)
    split = task.split()
    held = [_key(p) for p in split.test + split.val]
    assert len(set(held)) == 500  # distinct held-out problems
    assert {_key(p) for p in split.train}.isdisjoint(held)
    assert len(split.train) == 20000  # a stream: repeats kept
    counts = Counter(p.skill for p in split.train)
    weights = [(i + 1) ** -1.5 for i in range(20)]
    for i in (0, 1, 4, 19):  # within 5 standard deviations of the Zipf share
        share = weights[i] / sum(weights)
        sd = (20000 * share * (1 - share)) ** 0.5
        assert abs(counts[i] - 20000 * share) < 5 * sd, (i, counts[i])
    tested = Counter(p.skill for p in split.test)  # uniform over skills: 20 each on average
    assert len(tested) == 20 and max(tested.values()) < 45
    again = Task.parse(task.spec().removeprefix("task:"))
    assert again == task and again.split().fingerprint == split.fingerprint
    assert task.spec().endswith(",skills=20,zipf=1.5")
    for other in (SPEC.replace("zipf=1.5", "zipf=1.0"), SPEC + ",seed=1"):
        assert Task.parse(other).split().fingerprint != split.fingerprint
    # tasks without skills hash as before the field existed
    assert Task.parse("addition:digits=2,format=reverse").spec().count("skills") == 0
    assert Task.parse("addition:digits=2,format=reverse").split().fingerprint == (
        "9f200de020c1a641"
    )


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("addition:digits=3-1", "1 <= LO < HI"),
        ("addition:digits=0-2", "1 <= LO < HI"),
        ("addition:digits=a-2", "N or LO-HI"),
        ("addition:digits=4", "set train=N"),
        ("addition:digits=1-2,test=5000,val=1000,train=1", "at most half"),
        ("addition:digits=2,skills=26,train=100", "skills must be in 1..25"),
        ("addition:digits=3,skills=53,train=100", "skills must be in 1..52"),
        ("addition:digits=3,skills=4,train=0", "train=N > 0"),
        ("addition:digits=1-3,skills=4,train=10", "fixed digits=N"),
        ("addition:digits=3,skills=4,zipf=x,train=10", "zipf must be a number"),
        ("addition:digits=3,skills=4,zipf=-1,train=10", "zipf must be in 0..8"),
        ("addition:digits=2,skills=4,train=10,test=60,val=20", "at most half"),
        ("multiplication:digits=2,skills=4,train=10,test=5,val=5", "addition only"),
    ],
)
def test_bad_task_options_are_one_line_data_errors(spec, needle):
    """Digit ranges and skills options, checked when the spec is parsed."""
    with pytest.raises(DataError) as err:
        Task.parse(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)
