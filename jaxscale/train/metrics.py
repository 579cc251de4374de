"""What a training loop records: each model's running record, its ``metrics.jsonl``, the step
metrics on their way from the device, and a run's outcome.

A step's metrics (each model's loss and gradient norm) stay on the device when the step returns.
``StepMetrics`` starts their copy to the host at once and hands them to the loop ``lag`` calls
of the compiled step later (each call runs up to ``backend.steps_per_call`` steps), when they
have long arrived, so the host never waits for the steps it just queued: on an accelerator the
next steps are already running while the loop records the earlier ones. With ``lag`` 0 every
call is fetched as soon as it is queued (a host sync per call). Either way each step is
recorded in order with the same numbers, so a NaN is still recorded at the step where it
happened; a lag only lets the pack run up to ``lag`` more calls before it notices.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxscale.backend import fetch

LN2 = math.log(2.0)
SPIKE_FACTOR = 1.25  # a loss above 1.25x its running average is logged as a spike


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Convert nats/token to bits/byte, comparable across tokenizers: L / ln 2 / (bytes/token).

    Example:
      >>> round(bits_per_byte(math.log(2.0), 1.0), 6)
      1.0
    """
    return loss_nats / LN2 / bytes_per_token


class MetricsLog:
    """``metrics.jsonl`` of one run: loss, gradient norm and lr every few steps, loss spikes, and
    validation points. On resume, lines past the restored step are dropped, so nothing repeats.

    Example:
      >>> log = MetricsLog(Path("runs/r/metrics.jsonl"), keep_through_step=0)  # doctest: +SKIP
      >>> log.write(step=1, loss=5.5)                                          # doctest: +SKIP
    """

    def __init__(self, path: Path, keep_through_step: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [
            line
            for line in (path.read_text().splitlines(keepends=True) if path.exists() else [])
            if line.endswith("\n") and json.loads(line)["step"] <= keep_through_step
        ]
        path.write_text("".join(kept))
        self._file = path.open("a", buffering=1)

    def write(self, **record: Any) -> None:
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


@dataclass
class Slot:
    """The loop's record of one model of a pack, saved with every checkpoint."""

    curve: list[list[float]] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)  # training losses of the run's last tenth
    ema: float | None = None  # running average of the training loss, for spike detection
    spikes: int = 0
    max_grad_norm: float = 0.0
    diverged_at: int | None = None

    def record(
        self,
        logs: Sequence[MetricsLog],
        *,
        step: int,
        tokens: int,
        loss: float,
        grad_norm: float,
        lr: float,
        log_line: bool,
        recent: bool,
    ) -> None:
        """Record one step of a live model: a non-finite loss marks it diverged at ``step``;
        else the running average, spikes (loss > SPIKE_FACTOR x average), the largest gradient
        norm and, when ``recent``, the final-loss average. A line goes to ``logs`` on a spike,
        on divergence and when ``log_line``."""
        if not math.isfinite(loss):
            self.diverged_at = step
            for log in logs:
                log.write(step=step, loss=loss, grad_norm=grad_norm, diverged=True)
            return
        spike = self.ema is not None and loss > SPIKE_FACTOR * self.ema
        self.spikes += spike
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        self.max_grad_norm = max(self.max_grad_norm, grad_norm)
        if recent:
            self.recent.append(loss)
        if spike or log_line:
            for log in logs:
                log.write(
                    step=step,
                    tokens=tokens,
                    loss=loss,
                    grad_norm=grad_norm,
                    lr=lr,
                    **({"spike": True} if spike else {}),
                )


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one run produced: the measured numbers, before the sweep adds provenance."""

    steps: int  # the run's planned optimiser steps
    tokens: int  # tokens of the planned run: steps x batch x context
    loss: float  # last validation loss, nats/token (nan if diverged)
    train_loss: float  # mean training loss over the last tenth of the steps
    curve: list[tuple[int, float]]  # (tokens seen, validation loss) along the run
    diverged_at: int | None  # the step whose loss was not finite, if any
    wall_s: float  # time of the run's job until this result, compiling and every attempt included
    tokens_per_s: float  # one model's training throughput after the first (compiling) step
    devices: int  # devices the run's job used
    dtype: str  # the compute dtype used
    spikes: int  # steps whose loss jumped well above its running average
    max_grad_norm: float
    resumed_at: int  # the step a checkpoint restored (0: trained from scratch)
    pack: int = 1  # models trained together in one vmapped step
    stopped_at: int | None = None  # early stop: the last step trained, short of ``steps``
    branch_at: int | None = None  # wsd: the trunk's step this run's cooldown branched off


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step's metrics on the host: each model's loss, gradient norm and learning rate."""

    step: int
    loss: np.ndarray  # (P,)
    grad_norm: np.ndarray  # (P,)
    lr: np.ndarray  # (P,)


class StepMetrics:
    """Step metrics in flight from the device, handed out in step order ``lag`` calls late.

    Each call of the compiled step queues the metrics of its steps, (K, P) arrays of which the
    first ``len(lr)`` rows are real steps.

    Example:
      >>> pending = StepMetrics(lag=2)
      >>> pending.push(first, metrics, lr_nxP)  # right after queueing a call  # doctest: +SKIP
      >>> records = list(pending.ready())     # the calls 2 or more behind    # doctest: +SKIP
      >>> records += pending.drain()          # all, before a checkpoint      # doctest: +SKIP
    """

    def __init__(self, lag: int):
        self.lag = lag
        self._queue: deque[tuple[int, dict[str, jax.Array], np.ndarray]] = deque()

    def push(self, first: int, metrics: dict[str, jax.Array], lr: np.ndarray) -> None:
        """Queue a call's device metrics, its steps numbered from ``first``, and start copying
        them to the host."""
        for x in metrics.values():
            if x.is_fully_addressable:  # a multi-host array is gathered by ``fetch`` instead
                x.copy_to_host_async()
        self._queue.append((first, metrics, lr))

    def ready(self) -> Iterator[StepRecord]:
        """The steps of the calls queued more than ``lag`` calls ago, oldest first."""
        while len(self._queue) > self.lag:
            yield from self._pop()

    def drain(self) -> Iterator[StepRecord]:
        """Every queued step, oldest first (waits for the newest call to finish)."""
        while self._queue:
            yield from self._pop()

    def _pop(self) -> Iterator[StepRecord]:
        first, metrics, lr = self._queue.popleft()
        loss, grad_norm = fetch(metrics["loss"]), fetch(metrics["grad_norm"])
        for k in range(len(lr)):
            yield StepRecord(first + k, loss[k], grad_norm[k], lr[k])
