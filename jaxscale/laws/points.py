"""A law's points from a table: columns found by role, checked, and what was done said.

What counts as a mistake in a table and what as a run's outcome:

* refused (one line naming the column and the rows): a missing, NaN, infinite, zero or negative
  size, token count, budget or test-time compute; a loss at or below zero; an accuracy outside
  [0, 1]; too few distinct sizes or token counts for the form;
* left out with a warning naming the rows: a missing, NaN or infinite loss or accuracy (a run
  that diverged or did not finish) and an accuracy of exactly 0 (a log-space fit cannot use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxscale.errors import UserError
from jaxscale.tables import Table, norm


@dataclass(frozen=True)
class Points:
    """A law's points taken from a table: checked float64 columns and how they were found.

    Attributes:
      columns: role -> values: ``N``, ``D``, ``C``, ``loss`` (and ``U`` when the table has it)
        for :func:`scaling_points`; ``T``, ``accuracy`` (and ``N``) for :func:`test_time_points`.
      note: one line saying which columns were read, what was derived and kept.
      table: the rows behind the points (a sweep's records carry the curves approach 1 uses).
    """

    columns: dict[str, np.ndarray]
    note: str
    table: Table

    def require_spread(self, needs: dict[str, int], form: str) -> None:
        """Refuse points with fewer distinct values of a role than ``needs`` asks, e.g.
        ``{"N": 2, "D": 2}``: a form cannot separate what the data never vary."""
        for role, k in needs.items():
            distinct = np.unique(self.columns[role])
            if len(distinct) < k:
                shown = ", ".join(f"{v:.4g}" for v in distinct)
                raise UserError(
                    f"{self.table.source}: {len(distinct)} distinct {role} ({shown}) among "
                    f"{len(self.table.rows)} rows; the {form} form needs {k} or more"
                )


def scaling_points(
    table: Table, names: dict[str, str | None], *, best_per_point: bool = False
) -> Points:
    """N, D, C, loss (and U) of a table, checked: the input of every scaling-law fit.

    D comes from its column, else from compute as D = C/(6N); C from its column, else 6ND.
    Rows without a finite loss are dropped with a warning; every other problem is refused.

    Args:
      table: from :func:`read_table`.
      names: the column to use per role (``N``, ``D``, ``C``, ``loss``, ``U``), or None to find
        it by :data:`ROLES`.
      best_per_point: keep only the lowest-loss row of each (N, D), as sweeps keep a point's
        best learning rate.

    Returns:
      :class:`Points` with columns ``N``, ``D``, ``C``, ``loss`` and, if the table has one, ``U``.

    Example:
      >>> scaling_points(read_table("runs.csv"), {"N": "params"}).columns["D"]  # doctest: +SKIP
    """
    flags = {"N": "--n-col", "D": "--d-col", "C": "--c-col", "loss": "--loss-col", "U": "--u-col"}
    n = table.require("N", names.get("N"), flags["N"])
    loss = table.require("loss", names.get("loss"), flags["loss"])
    d, c, u = (table.find(role, names.get(role)) for role in ("D", "C", "U"))
    if d is None and c is None:
        table.require("D", None, "--d-col or --c-col")
    table = table.drop(
        ~np.isfinite(table.values(loss)),
        f"loss ({loss!r}) is missing, NaN or infinite (diverged or unfinished runs)",
    )
    if not table.rows:
        raise UserError(f"{table.source}: no row has a finite loss")
    table.check(loss, "the loss", lambda v: v > 0, "positive")
    for role, name in (("N", n), ("D", d), ("C", c), ("U", u)):
        if name:
            table.check(name, role, lambda v: np.isfinite(v) & (v > 0), "a positive number")
    cols = {"N": table.values(n), "loss": table.values(loss)}
    cols["D"] = table.values(d) if d else table.values(c) / (6 * cols["N"])
    cols["C"] = table.values(c) if c else 6 * cols["N"] * cols["D"]
    if u:
        cols["U"] = table.values(u)
    parts = [f"N = {n!r} ({_convention(n, table.sweep)})"]
    parts.append(f"D = {d!r}" if d else f"D = C/(6N) with C = {c!r}")
    parts += [f"loss = {loss!r}"] + ([f"U = {u!r}"] if u else [])
    kept = f"{len(table.rows)} rows"
    if table.sweep:
        kept = f"{len(table.rows)} points (best learning rate per (N, D), seeds averaged)"
    if best_per_point:
        _, group = np.unique(np.stack([cols["N"], cols["D"]], 1), axis=0, return_inverse=True)
        group = group.ravel()
        order = np.lexsort((cols["loss"], group))
        best = order[np.r_[True, np.diff(group[order]) != 0]]
        keep = np.zeros(len(group), dtype=bool)
        keep[best] = True
        kept = f"the lowest loss of each (N, D): {len(best)} of {len(group)} rows"
        cols = {k: v[keep] for k, v in cols.items()}
        table = table.subset(keep)
    return Points(cols, f"{table.source}: {kept}; " + ", ".join(parts), table)


def test_time_points(table: Table) -> Points:
    """T, accuracy (and N) of a table, checked: the input of the test-time-compute fits.

    Rows whose accuracy is missing, NaN, infinite or exactly 0 are dropped with a warning (a
    fit in log space cannot use 0); an accuracy outside [0, 1] is refused.

    Returns:
      :class:`Points` with columns ``T``, ``accuracy`` and, if the table has one, ``N``.
    """
    t, acc, n = table.require("T"), table.require("accuracy"), table.find("N")
    table = table.drop(~np.isfinite(table.values(acc)), f"{acc} is missing, NaN or infinite")
    if not table.rows:
        raise UserError(f"{table.source}: no row has a finite {acc}")
    table.check(acc, "accuracy", lambda v: (v >= 0) & (v <= 1), "within [0, 1]")
    table = table.drop(table.values(acc) == 0, f"{acc} is 0, which a log-space fit cannot use")
    if not table.rows:
        raise UserError(f"{table.source}: no row has an accuracy above 0")
    for role, name in (("T", t), ("N", n)):
        if name:
            table.check(name, role, lambda v: np.isfinite(v) & (v > 0), "a positive number")
    cols = {"T": table.values(t), "accuracy": table.values(acc)}
    if n:
        cols["N"] = table.values(n)
    note = f"{table.source}: {len(table.rows)} rows; T = {t!r}, accuracy = {acc!r}"
    return Points(cols, note + (f", N = {n!r}" if n else ""), table)


def _convention(name: str, sweep: bool) -> str:
    """How a column of parameters counts them, as far as its name (or a sweep) says."""
    key = norm(name)
    if "non_embedding" in key or "nonembedding" in key or (sweep and name == "N"):
        return "non-embedding parameters: Kaplan's convention"
    if "total" in key:
        return "all parameters, embeddings included: Chinchilla's convention"
    return "convention not stated: Chinchilla's counts all parameters, Kaplan's non-embedding"
