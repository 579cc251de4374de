"""What this machine is and what it has measured: provenance, cache directory, throughput.

Provenance (versions, backend, devices) is recorded with every result. The sweep also records
the training FLOP/s it achieved on this machine, so that planning commands (``jaxscale isoflop``)
can estimate wall time for a budget. The law commands keep their compiled solvers in JAX's
persistent compilation cache, in a folder of the cache directory per machine and JAX version.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy")


def cache_dir() -> Path:
    """jaxscale's cache: ``$JAXSCALE_CACHE``, else ``~/.cache/jaxscale``."""
    return Path(os.environ.get("JAXSCALE_CACHE") or Path.home() / ".cache" / "jaxscale")


def cpu_facts(*keys: str) -> list[str]:
    """The first core's ``/proc/cpuinfo`` lines for ``keys`` (Linux; "" where one is missing),
    else ``[platform.processor()]`` (macOS and others).

    Example:
      >>> cpu_facts("model name")                     # doctest: +SKIP
      ['model name\t: AMD EPYC']
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return [platform.processor()]
    return [next((x for x in lines if x.startswith(k)), "") for k in keys]


def compilation_cache_dir() -> Path:
    """This machine's folder of JAX's persistent compilation cache, under :func:`cache_dir`.

    JAX keys each entry by the program, jaxlib's version, the backend, the XLA flags and the
    compile options, but not by jax's own version nor by the host CPU, whose instruction set
    compiled CPU code is built for: a cache directory shared by the nodes of a cluster (as
    sweeps ask for) could otherwise hand one CPU the code of another. So the folder's name
    hashes those too, and an entry from another machine or version is never found.
    """
    cpu = cpu_facts("model name", "flags")
    versions = [metadata.version(name) for name in ("jax", "jaxlib")]
    key = "\n".join([*versions, platform.python_version(), platform.machine(), sys.platform, *cpu])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "xla" / f"jax{versions[0]}-{digest}"


def use_compilation_cache() -> Path:
    """Keep every program this process compiles from now on in :func:`compilation_cache_dir`,
    so that the next process running the same fit loads it instead of compiling it (a fit of
    the 4,500-start replication grid compiles for several seconds and solves in about two).

    Call it before the first compile: JAX decides once per process whether to use the cache. A
    cache the user chose (``JAX_COMPILATION_CACHE_DIR``) wins.

    Returns:
      The cache folder in use.
    """
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = compilation_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def provenance() -> dict[str, Any]:
    """Versions, backend and devices of this process, for a result record."""
    devices = jax.devices()
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "local_devices": len(devices),  # what the machine offers; a run records what it used
        "jax_version": jax.__version__,
        "versions": versions,
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _throughput_file() -> Path:
    return cache_dir() / "throughput.json"


def record_flops_per_s(flops_per_s: float, backend: str | None = None) -> None:
    """Remember the best training FLOP/s (counted FLOPs) seen on this machine and backend."""
    path = _throughput_file()
    backend = backend or jax.default_backend()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if flops_per_s > known.get(backend, 0.0):
        known[backend] = flops_per_s
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)


def measured_flops_per_s(backend: str | None = None) -> float | None:
    """The best training FLOP/s a sweep measured here on ``backend`` (default: the current one)."""
    try:
        known = json.loads(_throughput_file().read_text())
    except (OSError, ValueError):
        return None
    return known.get(backend or jax.default_backend())
