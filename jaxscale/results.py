"""results.jsonl: one JSON record per run, written atomically, loaded as columns.

The sweep assembles the file from its runs' structured records and nothing is ever scraped from
logs. The whole file is written to a temporary file, fsynced and renamed over the old one, so a
crash leaves either the old table or the new one, never a duplicate or a partial line; a torn
last line (a foreign writer) is ignored on load rather than poisoning the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jaxscale.errors import UserError

RESULTS_FILE = "results.jsonl"


def results_path(out_dir: str | os.PathLike[str]) -> Path:
    """The results file of a sweep directory (or the path itself when it is a file)."""
    p = Path(out_dir)
    return p if p.suffix == ".jsonl" else p / RESULTS_FILE


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace a results file with ``records``, one JSON line each, atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w") as f:
        f.writelines(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(p)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a results file, in order; [] when it does not exist.

    Raises:
      UserError: a complete line that is not a JSON object (a hand edit gone wrong).
    """
    p = results_path(path)
    if not p.exists():
        return []
    records = []
    for i, line in enumerate(p.read_text(errors="replace").splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break  # a torn last line: never written completely
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError as e:
                raise UserError(f"{p}, line {i}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise UserError(f"{p}, line {i}: a record must be a JSON object")
            records.append(record)
    return records


def unique_tokens(record: dict[str, Any]) -> float | None:
    """The unique tokens a run drew from, min(D, the corpus' unique training tokens): its
    ``unique_tokens``, or for records written before that field, D / max(epochs, 1)."""
    if record.get("unique_tokens") is not None:
        return float(record["unique_tokens"])
    if record.get("epochs") and record.get("D"):
        return record["D"] / max(record["epochs"], 1.0)
    return None


def check_fields(records: Iterable[dict[str, Any]], fields: Iterable[str], source: Any) -> None:
    """Refuse records lacking any of ``fields`` with one line naming the first such record (a
    results file that jaxscale did not write, or a hand edit)."""
    fields = list(fields)
    for i, r in enumerate(records, 1):
        missing = [f for f in fields if f not in r]
        if missing:
            raise UserError(
                f"{source}: record {i} ({r.get('run', 'unnamed')}) lacks {', '.join(missing)}: "
                "not a jaxscale sweep's results (jaxscale fit reads other tables)"
            )


def as_columns(
    records: Iterable[dict[str, Any]], keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Records -> {key: array}. Numeric columns become float64 arrays; others object arrays."""
    records = list(records)
    if keys is None:
        keys = sorted({k for r in records for k in r})
    cols: dict[str, np.ndarray] = {}
    for k in keys:
        values = [r.get(k) for r in records]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        cols[k] = np.asarray(values, dtype=np.float64 if numeric else object)
    return cols


def fit_points(
    records: Iterable[dict[str, Any]], *, include_predicted: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records a law is fitted to: one per (model, D), at its best learning rate.

    Only finished runs count (``status`` ok; early-stop predictions too when
    ``include_predicted``). Runs of one (model, D) that differ in seed are averaged; among
    learning rates, the one with the lowest mean loss is kept (the tuned-lr convention of
    Kaplan et al. and Hoffmann et al.).

    Returns:
      (points, choices): a record per point, its ``loss`` the mean over seeds, with ``seeds`` and
      ``runs`` added; and, for each point where several learning rates ran, the choice made:
      ``{"point", "lr", "loss_by_lr"}``.
    """
    statuses = ("ok", "predicted") if include_predicted else ("ok",)
    groups: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for r in records:
        if r.get("status", "ok") not in statuses:
            continue
        shape = (r.get("n_layer"), r.get("d_model"), r.get("n_head"), r.get("N"))
        point = (shape, r.get("D_target", r.get("D")))
        groups.setdefault(point, {}).setdefault(r.get("lr"), []).append(r)
    points, choices = [], []
    for by_lr in groups.values():
        mean = {lr: float(np.mean([r["loss"] for r in rs])) for lr, rs in by_lr.items()}
        best = min(mean, key=mean.__getitem__)
        runs = by_lr[best]
        points.append({**runs[0], "loss": mean[best], "seeds": len(runs),
                       "runs": [r.get("run") for r in runs]})  # fmt: skip
        if len(by_lr) > 1:
            label = runs[0].get("run", "").split("_lr")[0]
            choices.append({"point": label, "lr": best, "loss_by_lr": mean})
    return points, choices


def load_results(
    path: str | os.PathLike[str], *, include_predicted: bool = False
) -> dict[str, np.ndarray]:
    """Load a sweep's fit points as columns (``N``, ``D``, ``C``, ``loss``, ...).

    Diverged runs carry no loss and are left out; several learning rates of one (N, D) give
    their best, several seeds their mean (see ``fit_points``).

    Args:
      path: a sweep directory or a results.jsonl file.
      include_predicted: also use losses an early stop predicted rather than measured.

    Example:
      >>> cols = load_results("reports/quick")          # doctest: +SKIP
      >>> cols["N"], cols["D"], cols["loss"]            # doctest: +SKIP
    """
    points, _ = fit_points(read_records(path), include_predicted=include_predicted)
    return as_columns(points)
