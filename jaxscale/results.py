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
    """All complete records of a results file, in order; [] when it does not exist."""
    p = results_path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a torn last line: never written completely
        if line.strip():
            records.append(json.loads(line))
    return records


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


def load_results(path: str | os.PathLike[str], *, ok_only: bool = True) -> dict[str, np.ndarray]:
    """Load a sweep's results as columns (``N``, ``D``, ``C``, ``loss``, ...).

    Args:
      path: a sweep directory or a results.jsonl file.
      ok_only: keep only runs whose ``status`` is ``ok`` (diverged runs carry no loss).

    Example:
      >>> cols = load_results("reports/quick")          # doctest: +SKIP
      >>> cols["N"], cols["D"], cols["loss"]            # doctest: +SKIP
    """
    records = read_records(path)
    if ok_only:
        records = [r for r in records if r.get("status", "ok") == "ok"]
    return as_columns(records)
