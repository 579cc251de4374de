"""Tables of runs as people export them: read, filtered, their columns found by name.

``jaxscale fit`` and ``jaxscale ttc`` read a CSV (comma-separated with a header row; ``#``
comment lines and blank lines are skipped), JSON lines (one object per line, or one JSON list of
objects) or a sweep directory (its fit points: the best learning rate per (N, D), seeds
averaged). Columns are found by the names people use (:data:`ROLES`) unless the user names them;
``jaxscale.laws.points`` turns them into a law's checked points.

Every problem is one line naming the file, the column and the rows (a :class:`UserError`): an
empty, header-only or binary file, another delimiter, a ragged row or a nameless column, a line
that is not JSON, a cell that is not a number, a filter that keeps nothing.
"""

from __future__ import annotations

import csv
import json
import operator
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale.errors import UserError

# The column names each role is found by, in order of preference. One-letter names must match
# exactly (a table's ``n`` may count samples); longer ones ignoring case, spaces and dashes.
ROLES: dict[str, tuple[str, ...]] = {
    "N": ("N", "params", "parameters", "n_params", "num_params", "model_size", "nparams",
          "non_embedding_params", "non_embedding_parameters", "N_total", "total_params"),
    "D": ("D", "tokens", "train_tokens", "training_tokens", "n_tokens", "num_tokens",
          "dataset_size", "data"),
    "C": ("C", "flops", "compute", "train_flops", "training_flops", "training_flop", "flop"),
    "loss": ("loss", "val_loss", "eval_loss", "validation_loss", "valid_loss", "test_loss",
             "final_loss"),
    "U": ("U", "unique_tokens", "unique", "unique_data", "unique_train_tokens"),
    "T": ("T", "k", "samples", "n_samples", "num_samples", "attempts", "test_time_compute"),
    "accuracy": ("accuracy", "acc", "coverage", "pass@k", "pass_at_k", "solve_rate"),
}  # fmt: skip
_WHAT = {"N": "parameters", "D": "training tokens", "C": "compute (FLOPs)", "loss": "the loss",
         "U": "unique tokens", "T": "test-time compute", "accuracy": "accuracy"}  # fmt: skip


def norm(name: str) -> str:
    """A column name as compared with the usual names: lower case, spaces and dashes as ``_``."""
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


@dataclass(frozen=True)
class Table:
    """Rows read from a file or a sweep, each with a label saying where it came from.

    Attributes:
      source: the path as given, for messages.
      rows: one dict per row: column name -> value (a string from a CSV, a JSON value otherwise).
      labels: where each row is, e.g. ``line 7`` or ``run L2-d64-h2_D1M``.
      sweep: whether the rows are a jaxscale sweep's fit points (N is then non-embedding).
    """

    source: str
    rows: list[dict[str, Any]]
    labels: list[str]
    sweep: bool = False

    @property
    def names(self) -> list[str]:
        """The column names, in the order first seen."""
        return list(dict.fromkeys(k for r in self.rows for k in r))

    def find(self, role: str, name: str | None = None) -> str | None:
        """The column for ``role`` (a key of :data:`ROLES`): ``name`` if given (it must exist),
        else the first of the role's usual names present, else None."""
        if name is not None:
            return self.named(name)
        names = self.names
        by_norm = {norm(n): n for n in reversed(names)}
        for candidate in ROLES[role]:
            if len(candidate) == 1:
                if candidate in names:
                    return candidate
            elif norm(candidate) in by_norm:
                return by_norm[norm(candidate)]
        return None

    def named(self, name: str) -> str:
        """``name``, refused in one line unless the table has such a column."""
        if name not in self.names:
            raise UserError(f"{self.source} has no column {name!r}; columns: {_list(self.names)}")
        return name

    def require(self, role: str, name: str | None = None, flag: str = "") -> str:
        """Like :meth:`find`, but a role with no column is a one-line error."""
        found = self.find(role, name)
        if found is None:
            hint = f" (name it with {flag})" if flag else ""
            raise UserError(
                f"{self.source} has no column of {_WHAT[role]}{hint}: looked for "
                f"{_list(ROLES[role][:6])}...; columns: {_list(self.names)}"
            )
        return found

    def values(self, name: str, *, strict: bool = True) -> np.ndarray:
        """Column ``name`` as float64, NaN where a cell is empty; other text is an error (NaN
        too when not ``strict``)."""
        out = np.full(len(self.rows), np.nan)
        for i, row in enumerate(self.rows):
            v = row.get(name)
            if isinstance(v, str):
                v = v.strip() or None
            if v is None:
                continue
            try:
                if isinstance(v, bool):
                    raise TypeError
                out[i] = float(v)
            except (TypeError, ValueError):
                if not strict:
                    continue
                raise UserError(
                    f"{self.source}, {self.labels[i]}: {name} = {v!r:.40} is not a number"
                ) from None
        return out

    def subset(self, keep: np.ndarray) -> Table:
        """The rows where ``keep`` is true."""
        idx = np.flatnonzero(keep)
        return replace(self, rows=[self.rows[i] for i in idx], labels=[self.labels[i] for i in idx])

    def drop(self, bad: np.ndarray, why: str) -> Table:
        """Leave out the rows where ``bad`` is true, warning which (one line)."""
        if bad.any():
            warnings.warn(
                f"{self.source}: left out {int(bad.sum())} of {len(self.rows)} rows whose {why}: "
                f"{self.at(bad)}",
                stacklevel=2,
            )
        return self.subset(~bad)

    def at(self, mask: np.ndarray, values: np.ndarray | None = None, most: int = 5) -> str:
        """The labels of the rows in ``mask`` (with their values), for a message."""
        idx = np.flatnonzero(mask)
        parts = [self.labels[i] + (f" ({values[i]:g})" if values is not None else "") for i in idx]
        more = f" and {len(idx) - most} more" if len(idx) > most else ""
        return ", ".join(parts[:most]) + more

    def check(
        self, name: str, role: str, ok: Callable[[np.ndarray], np.ndarray], rule: str
    ) -> None:
        """Refuse the table unless ``ok(values)`` holds in every row of column ``name``."""
        v = self.values(name)
        bad = ~ok(v)
        if bad.any():
            raise UserError(
                f"{self.source}: {role} ({name!r}) must be {rule}; not so at {self.at(bad, v)}"
            )


def _list(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names)) if names else "none"


def read_table(path: str | Path, where: Sequence[str] = ()) -> Table:
    """Read a CSV, a JSON-lines file or a sweep directory and keep the rows ``where`` selects.

    Args:
      path: the file, or a sweep directory (its ``results.jsonl``).
      where: filters such as ``"lr==3e-3"`` or ``"schedule!=wsd"`` (``==``, ``!=``, ``<``,
        ``<=``, ``>``, ``>=``; numbers compared as numbers), all of which a row must pass. In a
        sweep they select runs before the best learning rate of each point is chosen.

    Returns:
      A :class:`Table` with at least one row.

    Raises:
      UserError: anything that makes the table unreadable (see the module's docstring).

    Example:
      >>> read_table("jaxscale/examples/chinchilla_replication.csv").names  # doctest: +SKIP
      ['total_params', 'flops', 'loss']
    """
    p = Path(path)
    if p.is_dir():
        return _read_sweep(p, where)
    if not p.is_file():
        raise UserError(f"{p} does not exist")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        if b"\0" in data[:8192]:
            raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "NUL byte")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(
            f"{p} is not a text table (binary data): give a CSV or JSON lines"
        ) from None
    if not text.strip():
        raise UserError(f"{p} is empty: a header line and one row per point expected")
    is_json = p.suffix.lower() in (".json", ".jsonl", ".ndjson") or text.lstrip()[0] in "[{"
    table = _parse_json(p, text) if is_json else _parse_csv(p, text)
    return _select(table, where)


def _parse_csv(p: Path, text: str) -> Table:
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    if not lines:
        raise UserError(f"{p} holds only comments: a header line and one row per point expected")
    (head_at, head), body = lines[0], lines[1:]
    header = [h.strip() for h in next(csv.reader([head]))]
    if len(header) == 1 and (sep := next((s for s in ";\t|" if s in header[0]), None)):
        raise UserError(f"{p} looks {sep!r}-separated: jaxscale reads comma-separated tables")
    if "" in header or len(set(header)) < len(header):
        raise UserError(f"{p}, line {head_at}: every column needs a name of its own: {header}")
    if not body:
        raise UserError(f"{p} has a header but no data rows")
    rows, labels = [], []
    for i, line in body:
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            raise UserError(
                f"{p}, line {i}: {len(cells)} values where the header has {len(header)} columns"
            )
        rows.append(dict(zip(header, cells, strict=True)))
        labels.append(f"line {i}")
    return Table(str(p), rows, labels)


def _parse_json(p: Path, text: str) -> Table:
    if text.lstrip().startswith("["):  # one JSON list of objects
        try:
            items = json.loads(text)
        except ValueError as e:
            raise UserError(f"{p} is not JSON ({e})") from None
        found = [
            (f"item {i}", item)
            for i, item in enumerate(items if isinstance(items, list) else [items], 1)
        ]
    else:
        found = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    found.append((f"line {i}", json.loads(line)))
                except ValueError as e:
                    raise UserError(f"{p}, line {i}: not JSON ({e.msg})") from None
    for label, item in found:
        if not isinstance(item, dict):
            raise UserError(f"{p}, {label}: a row must be a JSON object, not {item!r:.40}")
    if not found:
        raise UserError(f"{p} holds no rows")
    return Table(str(p), [item for _, item in found], [label for label, _ in found])


def _read_sweep(p: Path, where: Sequence[str]) -> Table:
    from jaxscale.results import RESULTS_FILE, fit_points, read_records, unique_tokens

    if not (p / RESULTS_FILE).is_file():
        raise UserError(f"{p} is not a sweep directory (no {RESULTS_FILE})")
    records = read_records(p)
    if not records:
        raise UserError(f"{p} has no finished run ({RESULTS_FILE} is empty)")
    runs = _select(
        Table(str(p), records, [_run_label(r, i) for i, r in enumerate(records, 1)]), where
    )
    points, _ = fit_points(runs.rows)
    if not points:
        raise UserError(f"{p} has no finished run (of {len(runs.rows)}, none has status ok)")
    for r in points:  # records written before unique_tokens: from their epochs
        if (u := unique_tokens(r)) is not None:
            r["unique_tokens"] = u
    return Table(str(p), points, [_run_label(r, i) for i, r in enumerate(points, 1)], sweep=True)


def _run_label(record: dict[str, Any], i: int) -> str:
    return f"run {record['run']}" if record.get("run") else f"record {i}"


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "=": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_CLAUSE = re.compile(r"\s*([^<>=!\s]+)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*")


def _select(table: Table, where: Sequence[str]) -> Table:
    """The rows passing every ``COLUMN OP VALUE`` clause of ``where``."""
    for clause in where:
        m = _CLAUSE.fullmatch(clause)
        if not m or not m[3]:
            raise UserError(f'--where {clause!r}: expected COLUMN OP VALUE, e.g. "lr==3e-3"')
        name, op, literal = m[1], _OPS[m[2]], m[3].strip("'\"")
        table.named(name)
        try:
            number = float(literal)
        except ValueError:
            number = None
        if number is not None:
            col = table.values(name, strict=False)
            if m[2] in ("==", "=", "!="):
                same = np.isclose(col, number, rtol=1e-9, atol=0)
                keep = same if m[2] != "!=" else ~same & ~np.isnan(col)
            else:
                with np.errstate(invalid="ignore"):
                    keep = op(col, number)
        elif m[2] in ("==", "=", "!="):
            keep = np.array([op(str(r.get(name)), literal) for r in table.rows], dtype=bool)
        else:
            raise UserError(
                f"--where {clause!r}: {m[2]} compares numbers, and {literal!r} is not one"
            )
        if not keep.any():
            seen = list(dict.fromkeys(str(r.get(name)) for r in table.rows))
            raise UserError(
                f"--where {clause!r} keeps none of the {len(table.rows)} rows of {table.source} "
                f"({name} takes {_list(seen[:6])}{' ...' if len(seen) > 6 else ''})"
            )
        table = table.subset(keep)
    return table
