"""What this machine is and what it has measured: provenance, cache directory, throughput.

Provenance (versions, backend, devices) is recorded with every result. The sweep also records
the training FLOP/s it achieved on this machine, so that planning commands (``jaxscale isoflop``)
can estimate wall time for a budget.
"""

from __future__ import annotations

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
