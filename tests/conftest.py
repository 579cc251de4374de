"""Shared test set-up: a private jaxscale cache, so tests never touch ~/.cache/jaxscale, and
jaxscale's command line run in the test's own process."""

from collections.abc import Callable

import pytest

from jaxscale import analysis
from jaxscale.cli import main


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXSCALE_CACHE", str(tmp_path_factory.mktemp("jaxscale-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _one_local_worker() -> None:
    """Sweeps in tests train in the test's own process: a pool of worker processes would start
    JAX anew for every tiny sweep. tests/test_launch.py runs the local workers themselves."""
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXSCALE_WORKERS", "1")
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _fewer_report_resamples() -> None:
    """Sweep reports in tests resample 100 times, not 400: the tests check that every interval is
    there and holds its estimate, not its width (tests/test_fit.py checks coverage), and the
    resamples are most of a small sweep's report time."""
    mp = pytest.MonkeyPatch()
    mp.setattr(analysis, "BOOTSTRAP", 100)
    yield
    mp.undo()


def _run_cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., int]:
    """``run_cli("sweep", ...)``: jaxscale's CLI with these arguments; its exit status."""
    return _run_cli
