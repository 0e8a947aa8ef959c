"""The run lock on a real database: who may take over a held lock."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, update

from CandleThrob.errors import LockHeldError
from CandleThrob.warehouse.lock import RunLock, process_scope
from CandleThrob.warehouse.schema import ingestion_lock
from CandleThrob.warehouse.storage import Warehouse


@pytest.fixture
def warehouse(database_url):
    wh = Warehouse(create_engine(database_url))
    wh.create_schema()
    yield wh
    wh.dispose()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _rewrite_holder(wh: Warehouse, **values) -> None:
    with wh.transaction() as conn:
        conn.execute(update(ingestion_lock).values(**values))


def test_a_live_holder_is_named_and_kept(warehouse):
    first = RunLock(warehouse, "run-1")
    first.acquire()
    with pytest.raises(LockHeldError, match=rf"run run-1 on host .*, pid {os.getpid()}, started "):
        RunLock(warehouse, "run-2").acquire()
    first.release()
    RunLock(warehouse, "run-3").acquire()  # released: free again


def test_a_dead_holder_in_our_scope_is_taken_over_at_once(warehouse):
    RunLock(warehouse, "run-1", pid=_dead_pid()).acquire()
    taker = RunLock(warehouse, "run-2")
    taker.acquire()
    assert taker.taken_over_from.run_id == "run-1"


def test_a_holder_in_another_pid_namespace_is_judged_by_its_heartbeat(warehouse):
    """Same hostname (a container with host networking) but another pid namespace:
    its pid says nothing here, so a recent heartbeat keeps the lock held."""
    RunLock(warehouse, "run-1", pid=_dead_pid()).acquire()
    _rewrite_holder(warehouse, process_scope=process_scope() + "-elsewhere")
    with pytest.raises(LockHeldError):
        RunLock(warehouse, "run-2").acquire()
    _rewrite_holder(warehouse, heartbeat_at=warehouse.now() - dt.timedelta(minutes=11))
    RunLock(warehouse, "run-3").acquire()


def test_a_holder_on_another_host_is_stale_only_after_ten_minutes(warehouse):
    RunLock(warehouse, "run-1", host="elsewhere").acquire()
    _rewrite_holder(warehouse, heartbeat_at=warehouse.now() - dt.timedelta(minutes=9))
    with pytest.raises(LockHeldError):
        RunLock(warehouse, "run-2").acquire()
    _rewrite_holder(warehouse, heartbeat_at=warehouse.now() - dt.timedelta(minutes=11))
    RunLock(warehouse, "run-3").acquire()


def test_a_run_whose_lock_was_taken_cannot_write(warehouse):
    from CandleThrob.warehouse.lock import LockLostError
    victim = RunLock(warehouse, "run-1", host="elsewhere")
    victim.acquire()
    _rewrite_holder(warehouse, heartbeat_at=warehouse.now() - dt.timedelta(minutes=11))
    RunLock(warehouse, "run-2").acquire()
    with pytest.raises(LockLostError):
        with warehouse.transaction() as conn:
            victim.assert_held(conn)


def test_shards_hold_separate_locks(warehouse):
    RunLock(warehouse, "run-1", name="shard-1-of-2").acquire()
    RunLock(warehouse, "run-2", name="shard-2-of-2").acquire()
    with pytest.raises(LockHeldError):
        RunLock(warehouse, "run-3", name="shard-1-of-2").acquire()
