"""The run lock: one live writer per scope (the whole universe, or one shard).

A row in ``ingestion_lock`` names the holder (run, host, pid, process start
time, heartbeat). Taking over a lock is a compare-and-swap on that row, allowed
only when the holder is provably dead: on this host its process is gone (or the
pid was reused by a newer process); on another host its heartbeat is older
than ``stale_after``. Every batch transaction re-checks ownership
(``assert_held``) in the same transaction as its writes, so even a run that
lost its lock while stalled can never write beside the new holder.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from typing import Optional

import psutil
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from CandleThrob.errors import LockHeldError, LockLostError
from CandleThrob.warehouse.schema import ingestion_lock
from CandleThrob.warehouse.storage import Warehouse

STALE_AFTER = dt.timedelta(minutes=10)
log = logging.getLogger("CandleThrob.lock")


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    process_started: Optional[float]
    process_scope: Optional[str]
    started_at: dt.datetime
    heartbeat_at: dt.datetime

    def describe(self) -> str:
        return (f"run {self.run_id} on host {self.host}, pid {self.pid}, "
                f"started {self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {self.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")


def process_scope() -> str:
    """Where a pid means something: this boot of this kernel, this pid namespace.
    Two containers with host networking share a hostname, but their pid 1s are
    different processes; only a holder in our own scope can be checked by pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
        return f"{boot_id}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux: the hostname alone has to do
        return ""


def _process_start(pid: int) -> Optional[float]:
    try:
        return round(psutil.Process(pid).create_time(), 3)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class RunLock:
    def __init__(self, warehouse: Warehouse, run_id: str, name: str = "main",
                 stale_after: dt.timedelta = STALE_AFTER, host: Optional[str] = None,
                 pid: Optional[int] = None):
        self.warehouse = warehouse
        self.run_id = run_id
        self.name = name
        self.stale_after = stale_after
        self.host = host or warehouse.clock.host
        self.pid = pid or warehouse.clock.pid
        self.scope = process_scope()
        self.held = False

    def acquire(self) -> None:
        now = self.warehouse.now()
        row = {"lock_name": self.name, "run_id": self.run_id, "host": self.host, "pid": self.pid,
               "process_started": _process_start(self.pid), "process_scope": self.scope,
               "started_at": now, "heartbeat_at": now}
        try:
            with self.warehouse.transaction() as conn:
                conn.execute(insert(ingestion_lock), [row])
            self.held = True
            return
        except IntegrityError:
            pass
        holder = self.holder()
        if holder is None:  # released between our insert and our read: try once more
            return self.acquire()
        if not self._is_dead(holder, now):
            raise LockHeldError(f"another run holds the lock {self.name!r}: {holder.describe()}")
        with self.warehouse.transaction() as conn:
            taken = conn.execute(update(ingestion_lock).where(and_(
                ingestion_lock.c.lock_name == self.name,
                ingestion_lock.c.run_id == holder.run_id,
                ingestion_lock.c.heartbeat_at == holder.heartbeat_at)).values(**row)).rowcount
        if taken != 1:
            current = self.holder()
            raise LockHeldError(f"another run holds the lock {self.name!r}: "
                                f"{current.describe() if current else 'unknown'}")
        self.held = True
        self.taken_over_from = holder
        self.warehouse.mark_abandoned(holder.run_id, by=self.run_id, at=now)
        log.warning("took over the lock %r from %s, whose process is gone; that run is marked abandoned",
                    self.name, holder.describe())

    def _is_dead(self, holder: Holder, now: dt.datetime) -> bool:
        if holder.host == self.host and holder.process_scope == self.scope:
            if not psutil.pid_exists(holder.pid):
                return True
            started = _process_start(holder.pid)
            # The pid lives, but belongs to a process started after the holder.
            return started is not None and holder.process_started is not None \
                and abs(started - holder.process_started) > 1.0
        return now - holder.heartbeat_at > self.stale_after

    def holder(self) -> Optional[Holder]:
        with self.warehouse.engine.connect() as conn:
            row = conn.execute(select(ingestion_lock).where(
                ingestion_lock.c.lock_name == self.name)).mappings().first()
        if row is None:
            return None
        return Holder(row["run_id"], row["host"], int(row["pid"]),
                      float(row["process_started"]) if row["process_started"] is not None else None,
                      row["process_scope"], row["started_at"], row["heartbeat_at"])

    def assert_held(self, conn: Connection) -> None:
        """Inside a write transaction: prove we still own the lock, and beat."""
        if not self.held:
            raise LockLostError("this run does not hold the lock")
        beat = conn.execute(update(ingestion_lock).where(and_(
            ingestion_lock.c.lock_name == self.name, ingestion_lock.c.run_id == self.run_id))
            .values(heartbeat_at=self.warehouse.now())).rowcount
        if beat != 1:
            self.held = False
            raise LockLostError(f"the lock {self.name!r} was taken over by another run")

    def start_heartbeat(self, interval: float = 60.0) -> None:
        """Beat from a background thread too, so that a batch stuck for minutes in
        rate-limit waits is not mistaken for a dead run by another host."""
        self._stop_beating = threading.Event()

        def beat() -> None:
            while not self._stop_beating.wait(interval):
                try:
                    with self.warehouse.transaction() as conn:
                        conn.execute(update(ingestion_lock).where(and_(
                            ingestion_lock.c.lock_name == self.name, ingestion_lock.c.run_id == self.run_id))
                            .values(heartbeat_at=self.warehouse.now()))
                except Exception:  # a missed beat is harmless; the batch commits beat too
                    continue

        self._beater = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
        self._beater.start()

    def release(self) -> None:
        if getattr(self, "_beater", None) is not None:
            self._stop_beating.set()
            self._beater.join()
            self._beater = None
        if not self.held:
            return
        try:
            with self.warehouse.transaction() as conn:
                conn.execute(delete(ingestion_lock).where(and_(
                    ingestion_lock.c.lock_name == self.name, ingestion_lock.c.run_id == self.run_id)))
        except DBAPIError as exc:
            # The database itself failed (the run already says so); a dead holder's lock is taken over.
            log.error("could not release the lock %r (%s); the next run takes it over", self.name, exc.orig)
        self.held = False
