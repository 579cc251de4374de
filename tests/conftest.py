"""Shared test set-up: a private jaxscale cache, so tests never touch ~/.cache/jaxscale."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXSCALE_CACHE", str(tmp_path_factory.mktemp("jaxscale-cache")))
    yield
    mp.undo()
