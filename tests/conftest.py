"""Shared test helpers: locating the golden fixtures (see ../shared/fixtures/README.md)."""

import os
from pathlib import Path

import pytest


def fixtures_dir():
    """Returns the golden-fixture folder, which may not exist.

    ``$KMV_FIXTURES`` if set, else ``shared/fixtures`` next to the repository
    (``<repo>/../shared/fixtures``). Safe to call at collection time, e.g. to
    parametrize over ``sorted(fixtures_dir().glob("*.pt"))``; tests that need
    the files should request the ``fixtures_path`` fixture.
    """
    override = os.environ.get("KMV_FIXTURES")
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_path():
    """The golden-fixture folder; skips the test if it is missing, or fails under CI."""
    path = fixtures_dir()
    if not path.is_dir():
        reason = (
            f"golden fixtures not found at {path}: set KMV_FIXTURES to the folder "
            "holding manifest.json and the *.pt / *.npz fixtures"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " (they are required when CI is set)", pytrace=False)
        pytest.skip(reason)
    return path
