"""Logging: text for people, JSON lines for collectors, secrets scrubbed from both.

Logs go to stderr; the final summary goes to stdout. Every record carries the
run id once a run has one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from typing import Iterable, Optional, TextIO

ROOT = "CandleThrob"
_state = {"run_id": None, "secrets": ()}


def get_ingestion_logger(name: str = "ingestion") -> logging.Logger:
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def scrub(text: str, secrets: Optional[Iterable[str]] = None) -> str:
    for secret in (secrets if secrets is not None else _state["secrets"]):
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


class _RunContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _state["run_id"]
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", None),
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(fmt: str = "text", level: int = logging.INFO, stream: Optional[TextIO] = None) -> None:
    """Route the project's loggers, the client library's, every other library's warnings
    (the root logger: urllib3, ...) and Python's ``warnings`` to stderr, in one format.
    With JSON, an uncaught exception, in any thread, is a JSON line too, not a bare traceback."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RunContext())
    for name in (ROOT, "massive", "RESTClient", ""):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level if name == ROOT else logging.WARNING)
        logger.propagate = not name
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger -> the root's handler
    if fmt == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback,
                                                          args.thread.name if args.thread else None)


def _log_uncaught(exc_type: type, exc: BaseException, tb: object, thread: Optional[str] = None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    where = f" in thread {thread}" if thread else ""
    get_ingestion_logger("cli").critical("unexpected error%s: %s: %s", where, exc_type.__name__, exc,
                                         exc_info=(exc_type, exc, tb))


def set_run_context(run_id: Optional[str], secrets: Iterable[str] = ()) -> None:
    _state["run_id"] = run_id
    _state["secrets"] = tuple(s for s in secrets if s)
