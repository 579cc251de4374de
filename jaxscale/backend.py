"""Where runs execute: the backend choice, CPU cores as devices, the mesh and its shardings.

``configure`` must run before JAX initialises its backends (the CLI calls it first thing). It
honours ``--backend`` / ``JAXSCALE_BACKEND`` (auto | cpu | cuda | metal) and, on CPU, exposes one
XLA host device per core: XLA runs each device's share of a step on its own thread, whereas one
CPU device leaves most small-model work on a single core. On 2 cores, a 3-layer model of width
96 (L3-d96-h3, context 128, batch 32) trains 46.9k tok/s over 2 devices against 34.7k on one
(``scripts/bench_cpu.py --layers 3 --d-model 96 --heads 3 --context 128 --devices 1|2``).

Every job trains on ``pack_mesh``: its models over the ``pack`` axis, each model's batch over the
``data`` axis (and, for large models, its parameters too: FSDP); with one device this is a no-op.
Arrays go onto the mesh with ``place`` and come back with ``fetch``, which also work when the
mesh spans several processes (``--distributed``).
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscale.errors import UserError

BACKENDS = ("auto", "cpu", "cuda", "metal")
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"
_COLLECTIVE_TIMEOUT_SINCE = (0, 9)  # jaxlib 0.10.2 has it, 0.5.0 (the Metal pins) does not


def _jaxlib_at_least(version: tuple[int, ...]) -> bool:
    import jaxlib

    parts = jaxlib.__version__.split(".")[: len(version)]
    return tuple(int("".join(filter(str.isdigit, p)) or 0) for p in parts) >= version


# A jitted train step with attention and its gradient: the patterns that crash jax-metal.
_SMOKE_TEST = """
import jax, jax.numpy as jnp
jax.config.update("jax_platforms", "METAL")
from jaxscale.counting import ModelShape
from jaxscale.model import init_model, loss_fn
graphdef, params = init_model(ModelShape(2, 64, 2), 256, 32, 0)
grad = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(graphdef, p, b)))
loss, _ = grad(params, jnp.zeros((4, 33), jnp.int32))
assert jnp.isfinite(loss), loss
print(jax.devices()[0].platform)
"""


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def configure(
    backend: str | None = None, *, distributed: bool | None = None, smoke_timeout_s: float = 180.0
) -> str:
    """Choose the backend and expose CPU cores as devices; call before any JAX computation.

    Args:
      backend: auto | cpu | cuda | metal; default ``$JAXSCALE_BACKEND`` or auto. ``metal`` is
        smoke-tested in a subprocess first (jax-metal can crash the process rather than raise);
        if it fails or hangs, a warning is given and CPU is used.
      distributed: join a multi-host run with ``jax.distributed.initialize()``, which finds its
        peers from SLURM, Open MPI or Kubernetes; default
        ``$JAXSCALE_DISTRIBUTED`` = 1. Every host then sees every host's devices.
      smoke_timeout_s: how long the Metal smoke test may take.

    Returns:
      The backend requested after any fallback ("auto", "cpu", "cuda" or "metal").
    """
    choice = (backend or os.environ.get("JAXSCALE_BACKEND") or "auto").lower()
    if choice not in BACKENDS:
        raise UserError(f"unknown backend {choice!r} (allowed: {', '.join(BACKENDS)})")
    if choice == "metal" and not _metal_works(smoke_timeout_s):
        choice = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG not in flags:  # a user's own setting wins
        flags = f"{flags} {_DEVICE_COUNT_FLAG}={cpu_cores()}"
    if _COLLECTIVE_TIMEOUT_FLAG not in flags and _jaxlib_at_least(_COLLECTIVE_TIMEOUT_SINCE):
        # XLA:CPU aborts the process when one core's side of an all-reduce is 40 s late, which
        # a loaded machine can be; older jaxlibs reject the flag at start-up, so it is gated
        flags = f"{flags} {_COLLECTIVE_TIMEOUT_FLAG}=600"
    os.environ["XLA_FLAGS"] = flags.strip()
    platforms = {"cpu": "cpu", "cuda": "cuda", "metal": "METAL"}.get(choice)
    if platforms:
        jax.config.update("jax_platforms", platforms)
    if distributed is None:
        distributed = os.environ.get("JAXSCALE_DISTRIBUTED", "") == "1"
    if distributed:
        _join_hosts()
    return choice


def _join_hosts() -> None:
    """``jax.distributed.initialize()``: SLURM and Open MPI are detected; elsewhere
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAXSCALE_NUM_PROCESSES`` and
    ``JAXSCALE_PROCESS_ID`` say who is who."""
    # CPU processes exchange their collectives over gloo (GPUs use NCCL whatever this says).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    manual = {
        key: int(os.environ[var])
        for key, var in (("num_processes", "JAXSCALE_NUM_PROCESSES"),
                         ("process_id", "JAXSCALE_PROCESS_ID"))
        if os.environ.get(var, "").isdigit()
    }  # fmt: skip
    try:
        jax.distributed.initialize(**manual)
    except (ValueError, RuntimeError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise UserError(
            f"a multi-host run could not start ({lines[0][:160]}); start one process per host"
            " (or per GPU) under SLURM (srun) or Open MPI (mpirun)"
        ) from None


def _metal_works(timeout_s: float) -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SMOKE_TEST], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        why = f"hung for {timeout_s:.0f} s"
    else:
        if done.returncode == 0 and done.stdout.strip().upper() == "METAL":
            return True
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        why = f"exit status {done.returncode}: {lines[-1][:200]}"
    warnings.warn(
        f"the Apple Metal backend failed its smoke test ({why}); running on CPU instead. "
        'Install the pinned stack with: pip install "jaxscale[metal]"',
        stacklevel=2,
    )
    return False


def _on_metal() -> bool:
    return jax.default_backend().upper() == "METAL"


def supports_donation() -> bool:
    """Whether the backend can donate buffers to a jitted step (jax-metal cannot)."""
    return not _on_metal()


def vectorize_packs() -> bool:
    """Whether a pack's models are vmapped into batched kernels (accelerators) or looped inside
    the compiled step (CPU, where XLA's batched matmuls are slower than one matmul at a time)."""
    return jax.default_backend() != "cpu"


# Calls of the compiled step a training loop may queue before it records their metrics.
_METRICS_LAG = 4
# Steps a training loop runs in one compiled call (``train.step.make_pack_steps``).
_STEPS_PER_CALL = 16


def steps_per_call() -> int:
    """How many steps a training loop runs in one call of its compiled step.

    A tiny model's step is shorter than the host's work around it (flattening the state's
    pytree, placing the batch, queueing the metrics), so a sweep's loop runs 16 steps a call.
    A sweep's real loop on one core of an AMD EPYC at batch 4 x 128 (``scripts/bench_steps.py``)
    trained L2-d16-h2 at 121k tok/s a step a call and 210k at 16 (1.73x), L2-d24-h2 91k and
    152k (1.66x), L2-d48-h2 56k and 81k (1.45x), L2-d80-h2 33k and 41k (1.23x), the same numbers
    bit for bit. jax-metal crashes on some while-loop patterns (REFERENCE.md), so on Metal it is
    1: the plain step.
    ``JAXSCALE_STEPS_PER_CALL`` overrides it.
    """
    env = os.environ.get("JAXSCALE_STEPS_PER_CALL", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return 1 if _on_metal() else _STEPS_PER_CALL


def metrics_lag() -> int:
    """How many calls of the compiled step (``steps_per_call`` steps each) behind the device a
    training loop records step metrics.

    On an accelerator a host sync per step stalls the device after every step, which costs most
    where the steps are short (a ladder's small models). On CPU, where dispatch is asynchronous
    too, recording 4 steps late was never slower than a sync per step: context 128, batch 32 on
    2 loaded cores (load 10-12), L1-d32-h2 trained 14.3k tok/s against 12.1k, L3-d96-h3 2.01k
    against 2.00k, with identical records (``jaxscale.bench.bench_loop``, measured at a step a
    call). So every backend records 4 calls late; ``JAXSCALE_METRICS_LAG`` overrides it (the
    records are the same for any lag).
    """
    env = os.environ.get("JAXSCALE_METRICS_LAG", "")
    return int(env) if env.isdigit() else _METRICS_LAG


# A CPU micro-batch holds one token per this many bytes of a core's L2 cache, a power of two in
# [256, 4096] (see ``cpu_micro_tokens``); 512 KiB where the cache size cannot be read.
_L2_BYTES_PER_TOKEN = 1024
_DEFAULT_L2_BYTES = 512 * 1024


def l2_cache_bytes() -> int | None:
    """The L2 cache of one core in bytes (Linux sysfs, macOS sysctl), or None if unknown."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size[:-1].isdigit():
            return int(size[:-1]) * {"K": 1024, "M": 1024**2}.get(size[-1], 1)
    if sys.platform == "darwin":  # Apple silicon: the performance cores' L2
        for key in ("hw.perflevel0.l2cachesize", "hw.l2cachesize"):
            done = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True)
            if done.returncode == 0 and done.stdout.strip().isdigit():
                return int(done.stdout.strip())
    return None


def cpu_micro_tokens(l2_bytes: int | None) -> int:
    """Tokens of a CPU micro-batch for a core with ``l2_bytes`` of L2 cache: one token per
    1 KiB, rounded down to a power of two in [256, 4096] (512 KiB if unknown).

    The rule keeps each processor at its measured best: the AMD EPYC's 512 KiB L2 gives 512
    tokens, where (4 x 128 x 4 heads, context 256, batch 32, 2 cores) a step made 20.8k tok/s
    against 18.3k at 256, 19.5k at 1,024 and 14.2k for the whole 4,096; the Intel Xeon's 2 MiB
    gives 2,048 (measured in ``micro_batch_tokens``).

    Example:
      >>> cpu_micro_tokens(512 * 1024), cpu_micro_tokens(2 * 1024**2), cpu_micro_tokens(None)
      (512, 2048, 512)
    """
    tokens = (l2_bytes or _DEFAULT_L2_BYTES) // _L2_BYTES_PER_TOKEN
    return min(4096, max(256, 1 << (max(tokens, 1).bit_length() - 1)))


def micro_batch_tokens() -> int | None:
    """Tokens each device should process at a time within a step, or None for the whole batch.

    On CPU a step splits its batch into micro-batches (gradients accumulated inside the step) so
    that a micro-batch's working set stays close to the core: ``cpu_micro_tokens`` of this
    machine's L2 cache, or ``$JAXSCALE_CPU_MICRO_TOKENS``. Accelerators want the whole batch.
    """
    if jax.default_backend() != "cpu":
        return None
    env = os.environ.get("JAXSCALE_CPU_MICRO_TOKENS", "")
    return int(env) if env.isdigit() else cpu_micro_tokens(_l2_bytes())


_l2_bytes = functools.cache(l2_cache_bytes)


def compute_dtype(requested: str) -> str:
    """The compute dtype for ``requested`` (auto | float32 | bfloat16) on this backend.

    auto is bfloat16 on GPUs (float32 master weights) and float32 elsewhere; Metal has no bfloat16,
    so a request for it falls back to float32 there with a warning.
    """
    if requested == "auto":
        return "bfloat16" if jax.default_backend() == "gpu" else "float32"
    if requested == "bfloat16" and _on_metal():
        warnings.warn("Apple Metal has no bfloat16: computing in float32", stacklevel=2)
        return "float32"
    return requested


def pack_mesh(pack_size: int, batch_size: int, context: int | None = None) -> Mesh:
    """A 2-D ``(pack, data)`` mesh for P models trained together.

    The models are split over the ``pack`` axis (as many groups as divide both P and the device
    count: one or more models per device) and each group's batch over the ``data`` axis (the
    most of the remaining devices that divide the batch). P = 1 is plain data parallelism.

    On CPU, given the ``context``, a batch is split only while each device keeps at least one
    full micro-batch (:func:`micro_batch_tokens`): smaller shares gain nothing from a second
    core, and every split step waits on an all-reduce between the cores' threads, which XLA:CPU
    aborts the process over when one side is 40 s late (seen on loaded 2-core machines).
    """
    devices = jax.devices()  # every device of every host (after jax.distributed.initialize)
    groups = math.gcd(pack_size, len(devices))
    per_group = len(devices) // groups
    micro = micro_batch_tokens() if context and jax.process_count() == 1 else None
    fits = [k for k in range(1, per_group + 1) if batch_size % k == 0]
    if micro:
        fits = [k for k in fits if k == 1 or batch_size // k * context >= micro]
    data = max(fits)
    return Mesh(np.asarray(devices[: groups * data]).reshape(groups, data), ("pack", "data"))


def pack_shardings(mesh: Mesh, tree: Any, *, shard: bool) -> Any:
    """Shardings of a pack's state (every leaf has a leading axis of P models).

    The model axis goes over ``pack``. With ``shard`` (large models), each leaf is also split
    FSDP-style over ``data`` along its largest axis that the data axis divides, so a device holds
    1/data of the parameters and optimiser state; XLA gathers them for each step's matmuls.
    Otherwise every device of a group holds its models whole.
    """
    data = mesh.shape["data"]

    def spec(leaf: Any) -> NamedSharding:
        axes: list[str | None] = ["pack"] + [None] * (leaf.ndim - 1)
        if shard and data > 1:
            fits = [i for i in range(1, leaf.ndim) if leaf.shape[i] % data == 0]
            if fits:
                axes[max(fits, key=lambda i: leaf.shape[i])] = "data"
        while axes[-1] is None:  # P("pack") as jit writes it: another spelling recompiles
            axes.pop()
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(spec, tree)


def batch_sharding(mesh: Mesh, *, steps: bool = False) -> NamedSharding:
    """A pack's batches (P, B, L+1): models over ``pack``, sequences over ``data``; with
    ``steps``, several steps' batches (K, P, B, L+1)."""
    return NamedSharding(mesh, PartitionSpec(*([None] if steps else []), "pack", "data"))


def eval_sharding(mesh: Mesh) -> NamedSharding:
    """A validation batch (B, L+1), the same for every model: sequences over ``data``."""
    return NamedSharding(mesh, PartitionSpec("data"))


def is_lead() -> bool:
    """Whether this is process 0, the one that writes logs and results in a multi-host run."""
    return jax.process_index() == 0


def place(tree: Any, shardings: Any) -> Any:
    """Put host arrays (the same on every process) onto a sharding, a tree of them or one for all.

    In one process this is ``jax.device_put``. Across hosts each process supplies only the shards
    its own devices hold (``jax.make_array_from_callback``), which needs every process to hold the
    same values: they do, as every array placed is a pure function of seeds and step.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if not isinstance(shardings, NamedSharding):
        return jax.tree.map(place, tree, shardings)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, shardings, np.asarray(x).__getitem__),
        tree,
    )


def fetch(x: jax.Array) -> np.ndarray:
    """A (possibly multi-host) array's values, on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (a collective decision, e.g. to checkpoint now)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))
