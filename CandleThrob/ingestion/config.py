"""Run configuration: one dataclass, read from the environment and ``.env``.

Every field has exactly one environment variable (``ENV_VARS``); command-line
flags win over both. ``__post_init__`` coerces and validates every value, so a
bad one stops the run (exit 2) before anything touches the database, with a
message naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .errors import ConfigError

DEFAULT_SQLITE_PATH = Path("data") / "candlethrob.db"
DEFAULT_BASE_URL = "https://api.polygon.io"
DEFAULT_SP500_URL = "https://en.wikipedia.org/wiki/List_of_S%26P_500_companies"

# field name -> environment variable. The README's configuration table is
# checked against this mapping by a test, so the two cannot drift.
ENV_VARS: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "oracle_user": "ORACLE_USER",
    "oracle_password": "ORACLE_PASSWORD",
    "oracle_dsn": "ORACLE_DSN",
    "tns_admin": "TNS_ADMIN",
    "oracle_wallet_password": "ORACLE_WALLET_PASSWORD",
    "ora_python_driver_type": "ORA_PYTHON_DRIVER_TYPE",
    "polygon_api_key": "POLYGON_API_KEY",
    "polygon_base_url": "POLYGON_BASE_URL",
    "sp500_url": "SP500_URL",
    "min_sp500_symbols": "MIN_SP500_SYMBOLS",
    "history_start": "HISTORY_START",
    "batch_size": "BATCH_SIZE",
    "rate_limit_seconds": "POLYGON_RATE_LIMIT",
    "max_retries": "MAX_RETRIES",
    "retry_delay": "RETRY_DELAY",
    "request_timeout": "REQUEST_TIMEOUT",
    "max_processing_time": "MAX_PROCESSING_TIME",
    "max_memory_usage": "MAX_MEMORY_USAGE",
    "parallel_processing": "PARALLEL_PROCESSING",
    "max_workers": "MAX_WORKERS",
    "min_data_quality_score": "MIN_DATA_QUALITY_SCORE",
    "enable_performance_monitoring": "ENABLE_PERFORMANCE_MONITORING",
    "enable_audit_trail": "ENABLE_AUDIT_TRAIL",
}
SECRET_FIELDS = ("polygon_api_key", "oracle_password", "oracle_wallet_password")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env(name: str, default: Any = None) -> Callable[[], Any]:
    def read() -> Any:
        value = os.environ.get(name)
        return default if value is None or value.strip() == "" else value.strip()
    return read


def _api_key_from_env() -> Optional[str]:
    # Polygon renamed itself Massive; accept the new variable name too.
    return _env("POLYGON_API_KEY")() or _env("MASSIVE_API_KEY")()


@dataclass
class AdvancedBatchConfig:
    """Everything a run needs to know; see the README's configuration table."""

    database_url: Optional[str] = field(default_factory=_env("DATABASE_URL"))
    oracle_user: Optional[str] = field(default_factory=_env("ORACLE_USER"))
    oracle_password: Optional[str] = field(default_factory=_env("ORACLE_PASSWORD"), repr=False)
    oracle_dsn: Optional[str] = field(default_factory=_env("ORACLE_DSN"))
    tns_admin: Optional[str] = field(default_factory=_env("TNS_ADMIN"))
    oracle_wallet_password: Optional[str] = field(default_factory=_env("ORACLE_WALLET_PASSWORD"), repr=False)
    ora_python_driver_type: str = field(default_factory=_env("ORA_PYTHON_DRIVER_TYPE", "thin"))
    polygon_api_key: Optional[str] = field(default_factory=_api_key_from_env, repr=False)
    polygon_base_url: str = field(default_factory=_env("POLYGON_BASE_URL", DEFAULT_BASE_URL))
    sp500_url: str = field(default_factory=_env("SP500_URL", DEFAULT_SP500_URL))
    # Fewer symbols on the constituents page means a broken page, not a smaller index.
    min_sp500_symbols: int = field(default_factory=_env("MIN_SP500_SYMBOLS", 450))
    history_start: Optional[dt.date] = field(default_factory=_env("HISTORY_START"))
    batch_size: int = field(default_factory=_env("BATCH_SIZE", 25))
    rate_limit_seconds: float = field(default_factory=_env("POLYGON_RATE_LIMIT", 12.0))
    max_retries: int = field(default_factory=_env("MAX_RETRIES", 3))
    retry_delay: float = field(default_factory=_env("RETRY_DELAY", 2.0))
    request_timeout: float = field(default_factory=_env("REQUEST_TIMEOUT", 30.0))
    max_processing_time: float = field(default_factory=_env("MAX_PROCESSING_TIME", 6 * 3600.0))
    max_memory_usage: float = field(default_factory=_env("MAX_MEMORY_USAGE", 2048.0))
    parallel_processing: bool = field(default_factory=_env("PARALLEL_PROCESSING", True))
    max_workers: int = field(default_factory=_env("MAX_WORKERS", 4))
    min_data_quality_score: float = field(default_factory=_env("MIN_DATA_QUALITY_SCORE", 0.8))
    enable_performance_monitoring: bool = field(default_factory=_env("ENABLE_PERFORMANCE_MONITORING", True))
    enable_audit_trail: bool = field(default_factory=_env("ENABLE_AUDIT_TRAIL", True))

    def __post_init__(self) -> None:
        self.batch_size = _int(self, "batch_size", minimum=1, maximum=10_000)
        self.min_sp500_symbols = _int(self, "min_sp500_symbols", minimum=1, maximum=1_000)
        self.rate_limit_seconds = _float(self, "rate_limit_seconds", minimum=0.0, maximum=3600.0)
        self.max_retries = _int(self, "max_retries", minimum=0, maximum=20)
        self.retry_delay = _float(self, "retry_delay", minimum=0.0, maximum=600.0)
        self.request_timeout = _float(self, "request_timeout", minimum=0.1, maximum=600.0)
        self.max_processing_time = _float(self, "max_processing_time", minimum=1.0, maximum=7 * 86400.0)
        self.max_memory_usage = _float(self, "max_memory_usage", minimum=64.0, maximum=1_048_576.0)
        self.parallel_processing = _bool(self, "parallel_processing")
        self.max_workers = _int(self, "max_workers", minimum=1, maximum=64)
        self.min_data_quality_score = _float(self, "min_data_quality_score", minimum=0.0, maximum=1.0)
        self.enable_performance_monitoring = _bool(self, "enable_performance_monitoring")
        self.enable_audit_trail = _bool(self, "enable_audit_trail")
        self.history_start = _date(self, "history_start")
        driver = str(self.ora_python_driver_type).strip().lower()
        if driver not in ("thin", "thick"):
            _bad(self, "ora_python_driver_type", "thin or thick")
        self.ora_python_driver_type = driver
        for name in ("polygon_base_url", "sp500_url"):
            if not str(getattr(self, name)).startswith(("http://", "https://")):
                _bad(self, name, "an http:// or https:// URL")
            setattr(self, name, str(getattr(self, name)).rstrip("/"))

    @property
    def workers(self) -> int:
        return self.max_workers if self.parallel_processing else 1

    def redacted(self) -> dict[str, Any]:
        """The configuration as it may appear in logs, reports and tables."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif f.name == "database_url" and value:
                value = redact_url(value)
            elif isinstance(value, dt.date):
                value = value.isoformat()
            out[f.name] = value
        return out

    def secrets(self) -> list[str]:
        """Every secret value this run knows, for scrubbing output."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        if self.database_url:
            from sqlalchemy.engine import make_url
            try:
                values.append(make_url(self.database_url).password)
            except Exception:  # an unparsable URL fails later with its own message
                pass
        return [v for v in values if v]

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "AdvancedBatchConfig":
        """Build from ``environ`` (default: os.environ) instead of the process environment.
        It swaps os.environ for the duration, so call it from one thread at a time."""
        if environ is None:
            return cls(**overrides)
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(environ)
            return cls(**overrides)
        finally:
            os.environ.clear()
            os.environ.update(saved)


BatchConfig = AdvancedBatchConfig


def redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def _bad(config: AdvancedBatchConfig, name: str, allowed: str) -> None:
    value = getattr(config, name)
    shown = "***" if name in SECRET_FIELDS else repr(value)
    raise ConfigError(f"{ENV_VARS[name]}={shown} is not allowed: expected {allowed}.")


def _int(config, name, *, minimum: int, maximum: int) -> int:
    value = getattr(config, name)
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not (minimum <= number <= maximum):
        _bad(config, name, f"a whole number from {minimum} to {maximum}")
    return number


def _float(config, name, *, minimum: float, maximum: float) -> float:
    value = getattr(config, name)
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number != number or not (minimum <= number <= maximum):
        _bad(config, name, f"a number from {minimum:g} to {maximum:g}")
    return number


def _bool(config, name) -> bool:
    value = getattr(config, name)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    _bad(config, name, "true or false (also 1/0, yes/no, on/off)")


def _date(config, name) -> Optional[dt.date]:
    value = getattr(config, name)
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        _bad(config, name, "a date as YYYY-MM-DD")
