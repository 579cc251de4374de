"""Arithmetic tasks with exact verifiers: generated problems, a disjoint train/test split, and the
corpus lines a sweep trains on (``corpus: "task:addition:digits=2,format=reverse"``).

A problem is two operands below 10^digits and an operator; its line is the prompt
``"\\n" + a op b + "="`` (operands zero-padded to ``digits``, so every prompt of a task has the
same length) followed by the completion and a newline. With a range ``digits=1-4`` the test and
val problems are of graded difficulty: each draws a length L uniformly from 1..4 and both operands
uniformly below 10^L (a repeat is drawn again), so a model may solve the short share of the test
set before the long one (Brown et al. 2024: coverage curves come from problems of heterogeneous
difficulty). ``train=N`` draws N training lines from the same mixture, held-out problems
excluded and repeats kept (there are only 100 one-digit problems); ``train=0`` trains on every
other problem below 10^digits.

* ``plain``: the result zero-padded to the widest result's digits, e.g. ``07+48=055``;
* ``reverse``: those digits reversed, least significant first (Lee et al. 2023): ``07+48=550``
  and ``35+68=301``;
* ``scratchpad``: a chain of variable length, then ``|`` and the result. Addition writes one
  step per digit from the least significant, ``a_i+b_i+carry>digit`` (``7+8+0>5c1``); multiplication
  one partial product per digit of b (``07*48>56,07*40>280``); the chain holds no ``=`` and no
  newline.

With ``skills=S`` (addition only, S <= 52 and S <= 5^digits) the second operand is hidden:
skill i (a letter, ``A``..``Z`` then ``a``..``z``) stands for a constant addend c_i with digits
in 0..4, distinct and drawn once by the seed, and the first operand a has digits in 0..5, so no
column carries and the answer has ``digits`` digits: ``"\n305+C="`` asks for 305 + c_C. Every
skill shares one easy circuit (add two digits per column) and needs its own memorized constant,
so a test set holds many problems of graded difficulty (the quantization model of Michaud et al.
2023): training lines draw skill i (0-based) with probability proportional to (i+1)^-zipf, so
rare skills are learned late (by the larger models, D growing with N) and partly (some digits of
c_i), while test and val problems draw the skill uniformly (every skill counts alike).
``train=N`` lines are drawn from that mixture, held-out problems (skill, a) excluded and repeats
kept.

The loss mask of ``train: {loss_on: answer}`` covers exactly the targets after ``=`` up to and
including the newline (``ANSWER_SPAN``): the completion, scratchpad included, and its end.

Example:
    >>> task = Task.parse("addition:digits=2,format=reverse,test=100")
    >>> p = task.split().test[0]
    >>> task.check(p, task.completion(p))
    True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from jaxscale.errors import DataError

OPS = {"addition": "+", "multiplication": "*"}
FORMATS = ("plain", "reverse", "scratchpad")
ANSWER_SPAN = (ord("="), ord("\n"))  # byte tokens opening and closing an answer
_KEYS = ("digits", "format", "train", "test", "val", "seed", "skills", "zipf")
SKILL_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # skill i's prompt symbol
_CONST_DIGITS, _OPERAND_DIGITS = 5, 6  # skills: digits 0..4 of c_i, 0..5 of a (sums <= 9)
_SPACE_LIMIT = 1 << 22  # a split with train=0 enumerates the whole space: at most this many


@dataclass(frozen=True, slots=True)
class Problem:
    """One arithmetic problem: ``a op b``; with a ``skill``, b is that skill's hidden constant."""

    a: int
    b: int
    op: str  # "+" or "*"
    skill: int | None = None

    @property
    def answer(self) -> int:
        """The true result."""
        return self.a + self.b if self.op == "+" else self.a * self.b


@dataclass(frozen=True)
class Split:
    """Disjoint problem sets; ``fingerprint`` hashes the task and all three sets."""

    train: tuple[Problem, ...]
    val: tuple[Problem, ...]
    test: tuple[Problem, ...]
    fingerprint: str


@dataclass(frozen=True)
class Task:
    """An arithmetic task: operator, digits, format, and the sizes of its split.

    Args:
      name: ``addition`` or ``multiplication``.
      digits: operands are uniform in [0, 10^digits) (zero-padded to ``digits``).
      min_digits: 0, or with a range ``digits=min_digits-digits`` the shortest length L of a
        test/val/train problem: L uniform in min_digits..digits, operands uniform below 10^L.
      format: ``plain``, ``reverse`` or ``scratchpad``.
      train, test, val: problems in each set (train 0: every problem not in test or val).
      seed: the shuffle that makes the split.
      skills: 0, or the number of skills (1..52): b is hidden, a per-skill constant.
      zipf: with skills, the exponent s of the training frequency (i+1)^-s of skill i.
    """

    name: str
    digits: int = 2
    format: str = "plain"
    train: int = 0
    test: int = 500
    val: int = 200
    seed: int = 0
    min_digits: int = 0
    skills: int = 0
    zipf: float = 1.0

    @classmethod
    def parse(cls, arg: str) -> Task:
        """``addition:digits=3,format=reverse`` (the part after ``task:``) -> Task.

        Raises:
          DataError: an unknown task, key, format, or an impossible size.
        """
        name, _, opts = arg.partition(":")
        if name not in OPS:
            raise DataError(f"unknown task {name!r}; use one of: {', '.join(OPS)}")
        kw: dict[str, int | float | str] = {}
        for item in filter(None, opts.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in _KEYS:
                raise DataError(f"task option {item!r}: use key=value with keys {', '.join(_KEYS)}")
            if key == "format":
                kw[key] = value
            elif key == "zipf":
                try:
                    kw[key] = float(value)
                except ValueError:
                    raise DataError(f"task option zipf must be a number: {value!r}") from None
            elif key == "digits" and "-" in value:
                lo, _, hi = value.partition("-")
                if not (lo.isdigit() and hi.isdigit()):
                    raise DataError(f"task option digits must be N or LO-HI, got {value!r}")
                kw["min_digits"], kw["digits"] = int(lo) or -1, int(hi)  # -1: invalid
            else:
                try:
                    kw[key] = int(value)
                except ValueError:
                    raise DataError(f"task option {key} must be an integer: {value!r}") from None
        task = cls(name, **kw)  # type: ignore[arg-type]
        task.validate()
        return task

    def validate(self) -> None:
        """Raise DataError unless the task can be generated."""
        if self.format not in FORMATS:
            raise DataError(f"task format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 1 <= self.digits <= 6:
            raise DataError(f"task digits must be in 1..6, got {self.digits}")
        if self.min_digits and not 1 <= self.min_digits < self.digits:
            raise DataError(
                f"task digits range {max(self.min_digits, 0)}-{self.digits} must have 1 <= LO < HI"
            )
        if self.test < 1 or self.val < 1 or self.train < 0:
            raise DataError("task sizes: test and val must be >= 1, train >= 0")
        distinct = self.test + self.val + (1 if self.skills else max(self.train, 1))
        if distinct > self.space:  # skills' training lines repeat problems
            raise DataError(
                f"{self.name} with {self.digits} digits has {self.space} problems, fewer than "
                f"test + val + train = {distinct}"
            )
        if self.skills:
            most = min(len(SKILL_NAMES), _CONST_DIGITS**self.digits)
            if not 1 <= self.skills <= most:
                raise DataError(
                    f"task skills must be in 1..{most} with {self.digits} digits, got {self.skills}"
                )
            if self.name != "addition":
                raise DataError(f"task skills are for addition only, got {self.name}")
            if self.min_digits or self.train == 0:
                raise DataError("task skills need a fixed digits=N and train=N > 0 lines")
            if not 0 <= self.zipf <= 8:
                raise DataError(f"task zipf must be in 0..8, got {self.zipf}")
            if self.test + self.val > self.space // 2:
                raise DataError(
                    f"skills hold out at most half of the {self.space} problems, fewer than "
                    f"test + val = {self.test + self.val}"
                )
        if self.train == 0 and self.space > _SPACE_LIMIT:
            raise DataError(
                f"{self.name} with {self.digits} digits has {self.space} problems, too many to "
                "train on all of them: set train=N"
            )
        if self.min_digits and self.test + self.val > self.space // 2:
            raise DataError(
                f"a digits range holds out at most half of the {self.space} problems, fewer "
                f"than test + val = {self.test + self.val}"
            )

    @property
    def op(self) -> str:
        """``+`` or ``*``."""
        return OPS[self.name]

    @property
    def space(self) -> int:
        """How many distinct problems exist: (10^digits)^2, or skills x 6^digits (the first
        operands whose digits are 0..5)."""
        if self.skills:
            return self.skills * _OPERAND_DIGITS**self.digits
        return 10 ** (2 * self.digits)

    @cached_property
    def constants(self) -> tuple[int, ...]:
        """Each skill's hidden constant b: distinct, digits in 0..4, drawn by the seed."""
        rng = np.random.default_rng((self.seed, self.digits, self.skills, 7))
        picked = rng.choice(_CONST_DIGITS**self.digits, self.skills, replace=False)
        return tuple(_decimal(int(c), _CONST_DIGITS) for c in picked)

    def _skill_problem(self, index: int) -> Problem:
        """The skills task's problem of index skill·6^digits + j: a's digits are j in base 6."""
        skill, j = divmod(index, _OPERAND_DIGITS**self.digits)
        return Problem(_decimal(j, _OPERAND_DIGITS), self.constants[skill], self.op, skill)

    @cached_property
    def _split(self) -> Split:
        rng = np.random.default_rng((self.seed, self.digits, list(OPS).index(self.name)))
        base = 10**self.digits
        held = self.test + self.val
        if self.skills:  # indices skill·6^digits + j (_skill_problem)
            idx = rng.permutation(self.space)[:held]
            weights = np.arange(1, self.skills + 1, dtype=np.float64) ** -self.zipf
            train = self._drawn(rng, self.train, weights / weights.sum(), exclude=idx)
            probs = tuple(self._skill_problem(int(i)) for i in np.concatenate([idx, train]))
        elif self.min_digits:
            idx = self._graded(rng, held)
            if self.train:  # the same mixture, held-out problems excluded, repeats kept
                idx = np.concatenate([idx, self._graded(rng, self.train, exclude=idx)])
            else:  # every other problem of the space, in a shuffled order
                rest = np.setdiff1d(np.arange(self.space), idx, assume_unique=True)
                idx = np.concatenate([idx, rng.permutation(rest)])
        elif self.space <= _SPACE_LIMIT:
            # distinct problem indices a·10^d + b: the whole space shuffled when it is small,
            # otherwise sampled (with rejection of repeats) to what the split needs
            idx = rng.permutation(self.space)[: held + (self.train or self.space)]
        else:
            idx = np.unique(rng.integers(0, self.space, size=2 * (held + self.train)))
            idx = rng.permutation(idx)[: held + self.train]
        if not self.skills:
            probs = tuple(Problem(int(i // base), int(i % base), self.op) for i in idx)
        test, val = probs[: self.test], probs[self.test : held]
        train = probs[held:]
        blob = asdict(self)
        for key in ("min_digits", "skills", "zipf"):  # fingerprints from before these fields
            if not self.skills and getattr(self, key) == Task.__dataclass_fields__[key].default:
                del blob[key]
        h = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
        for part in (train, val, test):
            rows = [(p.a, p.b) if p.skill is None else (p.a, p.b, p.skill) for p in part]
            h.update(np.asarray(rows, np.int64).tobytes())
            h.update(b"|")
        return Split(train, val, test, h.hexdigest()[:16])

    def _graded(
        self, rng: np.random.Generator, need: int, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """``need`` problem indices a·10^digits + b (``_stream``): each problem a length L
        uniform in min_digits..digits, a and b uniform below 10^L."""

        def draw(m: int) -> np.ndarray:
            high = 10 ** rng.integers(self.min_digits, self.digits + 1, size=m)
            return rng.integers(0, high) * 10**self.digits + rng.integers(0, high)

        return _stream(draw, need, exclude)

    def _drawn(
        self, rng: np.random.Generator, need: int, weights: np.ndarray, exclude: np.ndarray
    ) -> np.ndarray:
        """``need`` indices skill·6^digits + j (``_stream``), skill drawn by ``weights`` and j
        uniformly."""
        base = _OPERAND_DIGITS**self.digits

        def draw(m: int) -> np.ndarray:
            return rng.choice(self.skills, m, p=weights) * base + rng.integers(0, base, m)

        return _stream(draw, need, exclude)

    def split(self) -> Split:
        """The train/val/test problems, disjoint by construction (one shuffled index space)."""
        return self._split

    # --- text ------------------------------------------------------------------------------

    def prompt(self, p: Problem) -> str:
        """``"\\n07+48="``: what the model is given (its length is the same for every problem)."""
        d = self.digits
        b = f"{p.b:0{d}d}" if p.skill is None else SKILL_NAMES[p.skill]
        return f"\n{p.a:0{d}d}{p.op}{b}="

    def completion(self, p: Problem) -> str:
        """The correct completion after the prompt, without the closing newline."""
        answer = str(p.answer).zfill(self.answer_width)
        if self.format == "plain":
            return answer
        if self.format == "reverse":
            return answer[::-1]
        return f"{self._chain(p)}|{p.answer}"

    @property
    def answer_width(self) -> int:
        """Digits of the largest result: every answer is zero-padded to it (plain, reverse)."""
        if self.skills:  # no carry: 5..5 + 4..4
            return self.digits
        return len(str((10**self.digits - 1) ** 2 if self.op == "*" else 2 * 10**self.digits - 2))

    def _chain(self, p: Problem) -> str:
        d = self.digits
        if p.op == "+":
            steps, carry = [], 0
            for i in range(d):
                x, y = p.a // 10**i % 10, p.b // 10**i % 10
                total = x + y + carry
                steps.append(f"{x}+{y}+{carry}>{total % 10}c{total // 10}")
                carry = total // 10
            return ",".join(steps)
        return ",".join(
            f"{p.a:0{d}d}*{p.b // 10**i % 10 * 10**i}>{p.a * (p.b // 10**i % 10) * 10**i}"
            for i in range(d)
        )

    def line(self, p: Problem) -> str:
        """The training text of one problem: prompt, completion, newline (the prompt's leading
        newline is the previous line's end, so lines are joined without it)."""
        return self.prompt(p)[1:] + self.completion(p) + "\n"

    def parse_answer(self, text: str) -> int | None:
        """The integer a completion states (up to its first newline), or None if unparsable.

        Example:
          >>> Task("addition", format="reverse").parse_answer("301\\n")
          103
        """
        text = text.split("\n", 1)[0]
        if self.format == "scratchpad":
            if "|" not in text:
                return None
            text = text.rsplit("|", 1)[1]
        if not text.isascii() or not text.isdigit() or len(text) > 2 * self.digits + 1:
            return None
        return int(text[::-1] if self.format == "reverse" else text)

    def check(self, p: Problem, text: str) -> bool:
        """Exact check: the completion's stated answer equals ``p.answer``."""
        return self.parse_answer(text) == p.answer

    def max_completion(self) -> int:
        """An upper bound on the completion's length in bytes, its newline included."""
        worst = Problem(10**self.digits - 1, 10**self.digits - 1, self.op)
        return len(self.completion(worst)) + 1

    def spec(self) -> str:
        """The corpus spec that names this task."""
        keys = _KEYS if self.skills else _KEYS[:-2]
        opts = ",".join(f"{k}={getattr(self, k)}" for k in keys)
        if self.min_digits:
            opts = opts.replace(f"digits={self.digits}", f"digits={self.min_digits}-{self.digits}")
        return f"task:{self.name}:{opts}"


def _stream(draw: Callable[[int], np.ndarray], need: int, exclude: np.ndarray | None) -> np.ndarray:
    """``need`` problem indices in the order ``draw(m)`` (m at a time) yields them. Without
    ``exclude``, distinct (a repeat is drawn again); with it, indices in ``exclude`` are drawn
    again and repeats are kept (a training stream: a mixture's rare problems are few)."""
    out: list[np.ndarray] = []
    seen: set[int] = set()
    have = 0
    while have < need:
        drawn = draw(2 * (need - have) + 64)
        if exclude is not None:
            drawn = drawn[~np.isin(drawn, exclude)]
        else:
            keep = []
            for i in drawn.tolist():
                if i not in seen:
                    seen.add(i)
                    keep.append(i)
            drawn = np.asarray(keep, np.int64)
        out.append(drawn)
        have += len(drawn)
    return np.concatenate(out)[:need]


def _decimal(j: int, base: int) -> int:
    """The decimal number whose digits are ``j``'s digits in ``base``: _decimal(13, 6) = 21."""
    out, place = 0, 1
    while j:
        j, digit = divmod(j, base)
        out += digit * place
        place *= 10
    return out


def task_documents(task: Task, lines_per_doc: int = 256) -> list[tuple[bool, bytes]]:
    """(is_val, document) of a task's corpus: blocks of train lines, then blocks of val lines.

    The test problems are in neither: they are only for ``jaxscale.ttc``'s evaluation.
    """
    split = task.split()
    docs = []
    for is_val, probs in ((False, split.train), (True, split.val)):
        for start in range(0, len(probs), lines_per_doc):
            text = "".join(task.line(p) for p in probs[start : start + lines_per_doc])
            docs.append((is_val, text.encode()))
    return docs
