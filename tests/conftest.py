"""Shared fixtures: repository paths, the shared data folder, databases."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_DATA = ROOT.parent / "shared" / "data"

from pg_server import TempPostgres, server_binaries  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_server():
    if server_binaries() is None:
        if os.environ.get("CANDLETHROB_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL server binaries are required here (apt-get install postgresql)")
        pytest.skip("no PostgreSQL server binaries on this machine")
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind: every storage and end-to-end test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'candlethrob.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"ct_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'candlethrob.db'}"
