"""Experiment tracking, optional: a sweep's runs, fitted laws and figures in TensorBoard or W&B.

``jaxscale sweep CONFIG --track tensorboard|wandb`` logs every run that finishes, as a run of its
own, from the records the sweep writes anyway (its result line and ``metrics.jsonl``): its
config, its training curve (loss, gradient norm, learning rate), its validation points and its
final numbers. After the fit, the sweep's laws (every law's parameters and fit quality, and
laws.json whole) and its figures go to one more run, ``<sweep>-laws``. The x axis is the
tokens a run has seen, so runs of different batch sizes line up.

- ``tensorboard``: event files under ``DIR/tensorboard/<run>/`` (``tensorboard --logdir
  DIR/tensorboard``), written by tensorboardX, which needs no TensorFlow.
- ``wandb``: project ``jaxscale`` (or ``$WANDB_PROJECT``), the sweep's name as the group; W&B's
  own settings apply (``WANDB_MODE=offline`` logs to ``DIR/wandb`` for a later ``wandb sync``).

Install with ``pip install "jaxscale[track]"``.

Example:
    >>> tracker = open_tracker("tensorboard", Path("reports/quick"), "quick")  # doctest: +SKIP
    >>> tracker.log_run(record)                 # each finished run's result    # doctest: +SKIP
    >>> tracker.log_laws()                      # after the fit                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaxscale.errors import UserError

TRACKERS = ("tensorboard", "wandb")
# The final numbers of a run, logged as its summary.
SUMMARY_KEYS = ("loss", "bpb", "train_loss", "N", "N_total", "D", "C", "C_counted",
                "tokens_per_s", "wall_s", "diverged_at", "status")  # fmt: skip
# What tells a run apart within a sweep, logged with its config.
RUN_KEYS = ("run", "n_layer", "d_model", "n_head", "context", "seed", "lr", "schedule",
            "batch_size", "pack", "devices", "dtype", "backend")  # fmt: skip


def run_points(metrics: Path) -> Iterator[tuple[int, dict[str, float]]]:
    """A run's ``metrics.jsonl`` as (tokens seen, {tag: value}) points: ``train/loss``,
    ``train/grad_norm``, ``train/lr`` and ``val/loss``; lines without tokens (a divergence,
    recorded in the run's summary) are left out."""
    if not metrics.exists():
        return
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "tokens" not in row:
            continue
        if "val_loss" in row:
            yield row["tokens"], {"val/loss": row["val_loss"]}
        else:
            yield (
                row["tokens"],
                {f"train/{key}": row[key] for key in ("loss", "grad_norm", "lr") if key in row},
            )


def law_scalars(laws: dict[str, Any]) -> dict[str, float]:
    """Every fitted law's parameters and fit quality as flat ``laws/<law>/<name>`` scalars."""
    out = {}
    for key, law in laws.get("laws", {}).items():
        for name, value in law.get("params", {}).items():
            out[f"laws/{key}/{name}"] = value
        for name in ("r2", "objective"):
            if isinstance(law.get("fit", {}).get(name), float):
                out[f"laws/{key}/fit_{name}"] = law["fit"][name]
    return {k: v for k, v in out.items() if isinstance(v, float) and math.isfinite(v)}


class Tracker:
    """Where a sweep's runs and laws are logged; ``open_tracker`` picks the backend."""

    def __init__(self, out_dir: Path, sweep: str):
        self.out_dir, self.sweep = out_dir, sweep

    def log_run(self, record: dict[str, Any]) -> None:
        """Log one finished run: config, curves from its metrics.jsonl, final numbers."""
        config = {"sweep": record.get("config", {}), **{k: record.get(k) for k in RUN_KEYS}}
        summary = {f"final/{k}": record[k] for k in SUMMARY_KEYS if record.get(k) is not None}
        points = run_points(self.out_dir / "runs" / record["run"] / "metrics.jsonl")
        self._write(record["run"], config, points, summary, figures=[])

    def log_laws(self) -> None:
        """Log the sweep's fitted laws (``DIR/laws.json``) and its figures (``DIR/*.png``)."""
        laws = json.loads((self.out_dir / "laws.json").read_text())
        config = {"sweep": laws.get("config") or {}, "laws": laws}
        figures = sorted(self.out_dir.glob("*.png"))
        self._write(f"{self.sweep}-laws", config, iter(()), law_scalars(laws), figures)

    def _write(
        self,
        name: str,
        config: dict[str, Any],
        points: Iterator[tuple[int, dict[str, float]]],
        summary: dict[str, Any],
        figures: list[Path],
    ) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    """Event files under ``DIR/tensorboard/<run>/``, one writer per run."""

    def __init__(self, out_dir: Path, sweep: str):
        super().__init__(out_dir, sweep)
        self._writer = _require("tensorboardX", "tensorboard").SummaryWriter

    def _write(self, name, config, points, summary, figures) -> None:  # type: ignore[override]
        import matplotlib.image

        writer = self._writer(str(self.out_dir / "tensorboard" / name))
        try:
            writer.add_text("config", f"```\n{json.dumps(config, indent=1, default=str)}\n```")
            for tokens, scalars in points:
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, global_step=tokens)
            for key, value in summary.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    writer.add_scalar(key, value, global_step=0)
                else:
                    writer.add_text(key, str(value))
            for path in figures:
                image = matplotlib.image.imread(path)[..., :3]
                writer.add_image(f"figures/{path.stem}", image, dataformats="HWC")
        finally:
            writer.close()


class WandB(Tracker):
    """One W&B run per sweep run, grouped by the sweep's name."""

    def __init__(self, out_dir: Path, sweep: str):
        super().__init__(out_dir, sweep)
        self._wandb = _require("wandb", "wandb")

    def _write(self, name, config, points, summary, figures) -> None:  # type: ignore[override]
        wandb = self._wandb
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "jaxscale"),
            group=self.sweep,
            name=name,
            dir=str(self.out_dir),
            config=config,
            reinit="create_new",
        )
        try:
            run.define_metric("tokens")
            run.define_metric("*", step_metric="tokens")
            for tokens, scalars in points:
                run.log({"tokens": tokens, **scalars})
            if figures:
                run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in figures})
            run.summary.update(summary)
        finally:
            run.finish()


def open_tracker(kind: str, out_dir: Path, sweep: str) -> Tracker:
    """The tracker called ``kind`` (tensorboard | wandb) for the sweep in ``out_dir``.

    Raises:
      UserError: an unknown kind, or its package not installed (the line says how to).
    """
    if kind not in TRACKERS:
        raise UserError(f"unknown tracker {kind!r} (allowed: {', '.join(TRACKERS)})")
    return (TensorBoard if kind == "tensorboard" else WandB)(out_dir, sweep)


def _require(module: str, kind: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(
            f'--track {kind} needs the {module} package: pip install "jaxscale[track]"'
        ) from None
