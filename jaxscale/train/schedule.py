"""How long a run trains and its learning rate at each step: pure host-side functions.

The compiled step takes its learning rate as an argument, so the schedule is a table of
``(steps, P)`` learning rates evaluated here, one column per model of a pack. Runs of a pack may
therefore differ in peak lr, warmup and schedule while sharing one compiled step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import optax

from jaxscale.config import RunSpec, TrainConfig


def lr_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup x total_steps``, then cosine (or constant) to the last step.

    lr(t) = lr·t/W for t < W; cosine: lr·(r + (1 - r)(1 + cos(π(t - W)/(T - W)))/2) with
    r = ``min_lr_ratio``, reaching lr·r at t = T.

    Example:
      >>> float(lr_schedule(TrainConfig(lr=1e-3, warmup=0.1), 100)(10))  # doctest: +ELLIPSIS
      0.001...
    """
    warmup = round(cfg.warmup * total_steps)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
        [warmup],
    )


def lr_table(specs: Sequence[RunSpec], steps: int) -> np.ndarray:
    """Each run's learning rate at each of ``steps`` steps, shape (steps, P), float32: its own
    schedule (``lr_schedule`` of its ``train``) at unit peak, times its peak lr.

    Example:
      >>> spec = RunSpec("r", ModelShape(1, 16, 2), 10**5, 0).resolve(TrainConfig())
      ... # doctest: +SKIP
      >>> lr_table([spec], 100).shape                                  # doctest: +SKIP
      (100, 1)
    """
    unit = {
        s.train: np.asarray(
            lr_schedule(dataclasses.replace(s.train, lr=1.0), steps)(np.arange(steps)), np.float64
        )
        for s in specs
    }
    return np.stack([unit[s.train] * s.train.lr for s in specs], axis=1).astype(np.float32)


def wsd_lrs(train: TrainConfig, warmup: int, stable_end: int, end: int) -> np.ndarray:
    """Unit learning rates of a WSD trajectory over steps [0, end): linear warmup over
    ``warmup`` steps, constant to ``stable_end``, then a (1 - sqrt) cooldown (Hägele et al.
    2024's best shape) that reaches ``min_lr_ratio`` on the last step.

    Example:
      >>> wsd_lrs(TrainConfig(min_lr_ratio=0.0), 2, 8, 10).round(2).tolist()
      [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.29, 0.0]
    """
    t = np.arange(end, dtype=np.float64)
    lr = np.minimum(1.0, t / max(warmup, 1))
    cool = t >= stable_end
    frac = (t[cool] - stable_end + 1) / max(end - stable_end, 1)
    lr[cool] = train.min_lr_ratio + (1 - train.min_lr_ratio) * (1 - np.sqrt(frac))
    return lr


def planned_steps(tokens: int, train: TrainConfig, context: int) -> int:
    """Optimiser steps of a run of ``tokens``: whole steps, so D is rounded to a step's tokens.

    Example:
      >>> planned_steps(10**5, TrainConfig(batch_size=32), 128)
      24
    """
    return max(1, round(tokens / (train.batch_size * context)))


def stop_step(steps: int, fraction: float) -> int:
    """The last step of a run of ``steps`` stopped early after ``fraction`` (0: not stopped)."""
    return max(1, round(fraction * steps)) if fraction else steps


def cooldown_steps(steps: int, train: TrainConfig) -> int:
    """Steps of a WSD run's final cooldown: its last ``decay`` share."""
    return max(1, round(train.decay * steps))
