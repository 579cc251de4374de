"""Training: runs of one shape, alone or as a pack of models in one compiled step, to outcomes.

The modules, from the inside out:

- ``step``: the optimiser (``AdamW``, ``make_optimizer``) and the pure jitted step functions of
  one model and of a pack, micro-batched; the validation loss (``evaluate``).
- ``schedule``: a run's steps and its learning rate at each (cosine, constant, WSD), on the host.
- ``metrics``: each model's loop record, its ``metrics.jsonl``, and the step metrics fetched from
  the device a few calls late (``StepMetrics``), so the host never waits on the steps it queued.
- ``pack``: a pack's training loop and its state (streams, checkpoints, outcomes):
  ``train_pack`` and ``train_run``.
- ``wsd``: the warmup-stable-decay driver, a trunk with a cooldown branched off at each D.

Example:
    >>> out = train_run(RunSpec("r", ModelShape(1, 32, 2), 10**5, 0), corpus, context=32,
    ...                 train=TrainConfig(), eval_cfg=EvalConfig())         # doctest: +SKIP
    >>> out.loss, out.curve                                                 # doctest: +SKIP
"""

from jaxscale.train.metrics import (
    SPIKE_FACTOR,
    MetricsLog,
    RunOutcome,
    StepMetrics,
    bits_per_byte,
)
from jaxscale.train.pack import Pack, loop_key, pack_key, train_pack, train_run
from jaxscale.train.schedule import (
    cooldown_steps,
    lr_schedule,
    lr_table,
    planned_steps,
    stop_step,
    wsd_lrs,
)
from jaxscale.train.step import (
    AdamW,
    evaluate,
    make_optimizer,
    make_pack_steps,
    micro_batches,
    pack_steps,
    train_step,
)
from jaxscale.train.wsd import train_wsd, wsd_key, wsd_steps

__all__ = [
    "SPIKE_FACTOR",
    "AdamW",
    "MetricsLog",
    "Pack",
    "RunOutcome",
    "StepMetrics",
    "bits_per_byte",
    "cooldown_steps",
    "evaluate",
    "loop_key",
    "lr_schedule",
    "lr_table",
    "make_optimizer",
    "make_pack_steps",
    "micro_batches",
    "pack_key",
    "pack_steps",
    "planned_steps",
    "stop_step",
    "train_pack",
    "train_run",
    "train_step",
    "train_wsd",
    "wsd_key",
    "wsd_lrs",
    "wsd_steps",
]
