"""Per-run checkpoints with Orbax: the train state and the loop's own state, for exact resume.

A checkpoint holds the arrays of ``(params, opt_state)`` and a JSON record of the loop (step,
validation curve so far, the data iterator's state). The arrays are stored as a flat, numbered
dict of leaves: their structure is rebuilt from a freshly initialised state, so a checkpoint does
not depend on how a given Flax/optax version nests its pytrees.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
mid-write leaves no checkpoint that looks finished; one that is damaged later is skipped on
restore in favour of the one before it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    """The checkpoints of one run, in ``directory``; saves at most every ``every_s`` seconds.

    Example:
        >>> ckpt = RunCheckpoints(Path("reports/quick/runs/L1-d32-h2_D200k/checkpoints"), 300)
        >>> restored = ckpt.restore(like=(params, opt_state))       # doctest: +SKIP
    """

    def __init__(self, directory: Path, every_s: float, keep: int = 2):
        self.every_s = every_s
        self._last = time.monotonic()
        self._manager = ocp.CheckpointManager(
            directory.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep)
        )

    def due(self) -> bool:
        """Whether ``every_s`` seconds have passed since the last save (or the start)."""
        return time.monotonic() - self._last >= self.every_s

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save ``state`` (a pytree of arrays) and ``meta`` (JSON) as checkpoint ``step``.

        The write continues in the background; training goes on meanwhile.
        """
        leaves = {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(state))}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)
            ),
        )
        self._last = time.monotonic()

    def restore(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest readable checkpoint as ``(step, state shaped like like, meta)``, or None."""
        leaves, treedef = jax.tree.flatten(like)
        abstract = {str(i): ocp.utils.to_shape_dtype_struct(x) for i, x in enumerate(leaves)}
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                got = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # a damaged checkpoint: Orbax raises many types here
                warnings.warn(
                    f"checkpoint {step} is unreadable ({type(e).__name__}); "
                    "trying the one before it",
                    stacklevel=2,
                )
                continue
            state = jax.tree.unflatten(treedef, [got["state"][str(i)] for i in range(len(leaves))])
            return step, state, dict(got["meta"])
        return None

    def close(self) -> None:
        """Wait for a save in flight, then release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
