"""Shared test set-up: a private jaxscale cache, so tests never touch ~/.cache/jaxscale, and
jaxscale's command line run in the test's own process."""

from collections.abc import Callable

import pytest

from jaxscale.cli import main


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXSCALE_CACHE", str(tmp_path_factory.mktemp("jaxscale-cache")))
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
