"""Shared pieces of the benchmarks: the repository on sys.path, child processes
measured one by one, the local server as its own process, and text formatting."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
API_KEY = "bench-key"
FREE_TIER_SECONDS_PER_CALL = 12.0  # Polygon's free tier: 5 calls a minute


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CandleThrob settings, plus ``extra``:
    a developer's own .env values or DATABASE_URL must not leak into a run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLYGON_", "MASSIVE_", "DATABASE_URL", "ORACLE_", "SP500_URL",
                                "HISTORY_START", "BATCH_SIZE", "MAX_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    max_rss_mb: float  # the kernel's peak RSS of exactly this child (wait4), not of any other
    user_s: float
    sys_s: float
    stdout: str
    stderr: str


# Runs one command per JSON line read on stdin and answers with one JSON line:
# exit code, wall time from spawn to reap, and the rusage of exactly that child.
_LAUNCHER = r"""
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    job = json.loads(line)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(job["args"], env=job["env"], cwd=job["cwd"], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        print(json.dumps({"returncode": proc.returncode, "wall_s": wall, "max_rss_mb": usage.ru_maxrss / 1024,
                          "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "stdout": out.read(),
                          "stderr": err.read()}), flush=True)
"""


class Launcher:
    """A small helper process that starts the measured commands.

    Linux keeps a process's ``ru_maxrss`` across ``execve`` from the image that
    was forked: a child started straight from this benchmark (which holds
    hundreds of MB of generated bars) would report the benchmark's size as its
    own peak. Children of this small launcher start from ~10 MB instead.
    """

    def __init__(self):
        self.proc = subprocess.Popen([PYTHON, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=clean_env())

    def run(self, args: Sequence[str], env: dict[str, str], cwd: Optional[Path] = None) -> "ChildRun":
        job = {"args": [str(a) for a in args], "env": env, "cwd": str(cwd) if cwd else None}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the launcher process died")
        return ChildRun(**json.loads(answer))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


_launcher: Optional[Launcher] = None


def run_child(args: Sequence[str], env: dict[str, str], cwd: Optional[Path] = None) -> ChildRun:
    """Run a command to its end through the launcher; wall time from spawn to reap,
    peak RSS from ``wait4`` (that one child's own, not RUSAGE_CHILDREN's largest)."""
    global _launcher
    if _launcher is None or _launcher.proc.poll() is not None:
        _launcher = Launcher()
        atexit.register(_launcher.close)
    return _launcher.run(args, env, cwd)


class ServerProcess:
    """``python -m CandleThrob.testing.polygon_server`` with generated data, in its own
    process so that its CPU stays out of the measured one's."""

    def __init__(self, tickers: int, start: str, end: str, seed: int, request_log: Optional[Path] = None,
                 market_size: Optional[int] = None):
        self.args = [PYTHON, "-m", "CandleThrob.testing.polygon_server", "--tickers", str(tickers),
                     "--start", start, "--end", end, "--seed", str(seed), "--api-key", API_KEY]
        if market_size is not None:  # else the server's default, a full market
            self.args += ["--market-size", str(market_size)]
        if request_log is not None:
            self.args += ["--request-log", str(request_log)]
        self.request_log = request_log
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def __enter__(self) -> "ServerProcess":
        self.proc = subprocess.Popen(self.args, env=clean_env(), stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def duration(seconds: float) -> str:
    """A wall time as s / min s / h min s."""
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 1 else f"{seconds:.0f} s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes or hours else []) \
        + ([f"{secs} s"] if secs else [])
    return " ".join(parts)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    import platform
    return (f"machine: nproc {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), {platform.machine()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
