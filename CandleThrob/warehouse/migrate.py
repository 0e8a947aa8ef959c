"""Bring a database's schema to this release's, with Alembic; report the version.

A database made by the first release has tables but no ``alembic_version``: it
is stamped as revision 0001 (that release's schema) and upgraded from there. An
empty database goes through every revision. Runs that start together on an
empty database take turns (PostgreSQL: an advisory lock; SQLite: the write
lock its transactions take first).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_RELEASE = "0001"
# This release's schema version, also written here so that a run on an up-to-date database
# reads one row instead of importing Alembic and parsing every revision (~0.3 s a run);
# tests/test_schema.py proves it is Alembic's head.
HEAD = "0004"
_SCHEMA_LOCK_KEY = 7_311_500  # any constant: the advisory lock that serialises schema changes


def _config(**attributes: object) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes.update(attributes)
    return config


def head() -> str:
    """This release's schema version, as Alembic reads it from the revisions."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(conn: Connection) -> Optional[str]:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def up_to_date(conn: Connection) -> bool:
    """Whether the database is at ``HEAD`` already, read without Alembic."""
    if not inspect(conn).has_table("alembic_version"):
        return False
    return [tuple(r) for r in conn.execute(text("SELECT version_num FROM alembic_version"))] == [(HEAD,)]


def upgrade(conn: Connection, target: str = "head") -> Optional[str]:
    """Upgrade inside the caller's transaction to ``target`` (this release's schema unless a test
    builds an older one); returns the version found before (None: a new database)."""
    from alembic import command

    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})")
    found = current(conn)
    config = _config(connection=conn)
    if found is None and inspect(conn).has_table("ticker_data"):
        command.stamp(config, FIRST_RELEASE)
        found = FIRST_RELEASE
    if found != (head() if target == "head" else target):
        command.upgrade(config, target)
    return found


def offline_sql(dialect: str, start: Optional[str] = None) -> str:
    """The DDL every revision (from ``start``) would run on ``dialect``, without a database."""
    from alembic import command

    output = io.StringIO()
    target = f"{start}:head" if start else "head"
    command.upgrade(_config(dialect=dialect, output=output), target, sql=True)
    return output.getvalue()
