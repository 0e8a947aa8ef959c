"""Run configuration: one dataclass, read from the environment and ``.env``.

Every field has exactly one environment variable (``ENV_VARS``); command-line
flags win over both. ``__post_init__`` coerces and validates every value, so a
bad one stops the run (exit 2) before anything touches the database, with a
message naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import io
import re
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional
from urllib.parse import quote, urlsplit, urlunsplit

from CandleThrob.errors import ConfigError

DEFAULT_SQLITE_PATH = Path("data") / "candlethrob.db"
# The official client's own default host; api.polygon.io "remains supported for an extended period".
DEFAULT_BASE_URL = "https://api.massive.com"
DEFAULT_SP500_URL = "https://en.wikipedia.org/wiki/List_of_S%26P_500_companies"
DEFAULT_FRED_URL = "https://api.stlouisfed.org"
# The index has ~503 symbols; a page with far fewer is a broken or vandalised page,
# and trusting it would silently drop members from every later run.
MIN_SP500_SYMBOLS = 450
# Fed funds, CPI, unemployment, GDP, the 10-year yield, recessions, sentiment,
# housing starts, retail sales, industrial production, M2.
DEFAULT_MACRO_SERIES = ("FEDFUNDS", "CPIAUCSL", "UNRATE", "GDP", "GS10", "USREC", "UMCSENT", "HOUST",
                        "RSAFS", "INDPRO", "M2SL")
UNIVERSES = ("sp500", "all")
FORMER_MEMBER_POLICIES = ("membership", "window")

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
    "max_sp500_symbols": "MAX_SP500_SYMBOLS",
    "max_universe_changes": "MAX_UNIVERSE_CHANGES",
    "universe": "UNIVERSE",
    "former_members": "FORMER_MEMBERS",
    "history_start": "HISTORY_START",
    "history_years": "POLYGON_HISTORY_YEARS",
    "settle_sessions": "SETTLE_SESSIONS",
    "max_cell_retries": "MAX_CELL_RETRIES",
    "fred_api_key": "FRED_API_KEY",
    "fred_base_url": "FRED_BASE_URL",
    "macro_series": "MACRO_SERIES",
    "batch_size": "BATCH_SIZE",
    "rate_limit_seconds": "POLYGON_RATE_LIMIT",
    "rate_burst": "POLYGON_RATE_BURST",
    "max_retries": "MAX_RETRIES",
    "retry_delay": "RETRY_DELAY",
    "max_retry_after": "MAX_RETRY_AFTER",
    "request_timeout": "REQUEST_TIMEOUT",
    "max_response_mb": "MAX_RESPONSE_MB",
    "max_processing_time": "MAX_PROCESSING_TIME",
    "max_memory_usage": "MAX_MEMORY_USAGE",
    "parallel_processing": "PARALLEL_PROCESSING",
    "max_workers": "MAX_WORKERS",
    "min_data_quality_score": "MIN_DATA_QUALITY_SCORE",
    "enable_performance_monitoring": "ENABLE_PERFORMANCE_MONITORING",
    "enable_audit_trail": "ENABLE_AUDIT_TRAIL",
}
SECRET_FIELDS = ("polygon_api_key", "oracle_password", "oracle_wallet_password", "fred_api_key")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


class _FromEnvironment:
    """Marks a field still to be read from the environment mapping."""

    def __repr__(self) -> str:
        return "<from environment>"


FROM_ENV: Any = _FromEnvironment()

# Used when the variable is unset or blank.
DEFAULTS: dict[str, Any] = {
    "ora_python_driver_type": "thin",
    "polygon_base_url": DEFAULT_BASE_URL,
    "sp500_url": DEFAULT_SP500_URL,
    "min_sp500_symbols": MIN_SP500_SYMBOLS,
    "max_sp500_symbols": 600,
    "max_universe_changes": 10,
    "universe": "sp500",
    "former_members": "membership",
    "settle_sessions": 1,
    "max_cell_retries": 3,
    "fred_base_url": DEFAULT_FRED_URL,
    "macro_series": ",".join(DEFAULT_MACRO_SERIES),
    "batch_size": 25,
    "rate_limit_seconds": 12.0,
    "max_retries": 3,
    "retry_delay": 2.0,
    "max_retry_after": 300.0,
    "request_timeout": 30.0,
    "max_response_mb": 64.0,
    "max_processing_time": 6 * 3600.0,
    "max_memory_usage": 2048.0,
    "parallel_processing": True,
    "max_workers": 4,
    "min_data_quality_score": 0.8,
    "enable_performance_monitoring": True,
    "enable_audit_trail": True,
}
# Polygon renamed itself Massive; the new variable name is accepted too.
ALIASES = {"polygon_api_key": ("MASSIVE_API_KEY",)}


@dataclass
class AdvancedBatchConfig:
    """Everything a run needs to know; see the README's configuration table.

    Fields left unset are read once from ``environ`` (default: the process
    environment), as an explicit mapping: nothing else in the tool reads the
    environment. Keyword arguments win over it, as command-line flags do.
    """

    database_url: Optional[str] = FROM_ENV
    oracle_user: Optional[str] = FROM_ENV
    oracle_password: Optional[str] = field(default=FROM_ENV, repr=False)
    oracle_dsn: Optional[str] = FROM_ENV
    tns_admin: Optional[str] = FROM_ENV
    oracle_wallet_password: Optional[str] = field(default=FROM_ENV, repr=False)
    ora_python_driver_type: str = FROM_ENV
    polygon_api_key: Optional[str] = field(default=FROM_ENV, repr=False)
    polygon_base_url: str = FROM_ENV
    sp500_url: str = FROM_ENV
    # Fewer symbols on the constituents page means a broken page, not a smaller index;
    # far more, or many changes at once, means a flooded or vandalised one.
    min_sp500_symbols: int = FROM_ENV
    max_sp500_symbols: int = FROM_ENV
    max_universe_changes: int = FROM_ENV
    universe: str = FROM_ENV
    former_members: str = FROM_ENV
    history_start: Optional[dt.date] = FROM_ENV
    history_years: Optional[int] = FROM_ENV
    settle_sessions: int = FROM_ENV
    max_cell_retries: int = FROM_ENV
    fred_api_key: Optional[str] = field(default=FROM_ENV, repr=False)
    fred_base_url: str = FROM_ENV
    macro_series: tuple[str, ...] = FROM_ENV
    batch_size: int = FROM_ENV
    rate_limit_seconds: float = FROM_ENV
    rate_burst: Optional[int] = FROM_ENV
    max_retries: int = FROM_ENV
    retry_delay: float = FROM_ENV
    max_retry_after: float = FROM_ENV
    request_timeout: float = FROM_ENV
    max_response_mb: float = FROM_ENV
    max_processing_time: float = FROM_ENV
    max_memory_usage: float = FROM_ENV
    parallel_processing: bool = FROM_ENV
    max_workers: int = FROM_ENV
    min_data_quality_score: float = FROM_ENV
    enable_performance_monitoring: bool = FROM_ENV
    enable_audit_trail: bool = FROM_ENV
    environ: InitVar[Optional[Mapping[str, str]]] = None

    def __post_init__(self, environ: Optional[Mapping[str, str]]) -> None:
        self._read_environment(os.environ if environ is None else environ)
        self.batch_size = _int(self, "batch_size", minimum=1, maximum=10_000)
        self.min_sp500_symbols = _int(self, "min_sp500_symbols", minimum=1, maximum=1_000)
        self.max_sp500_symbols = _int(self, "max_sp500_symbols", minimum=self.min_sp500_symbols, maximum=100_000)
        self.max_universe_changes = _int(self, "max_universe_changes", minimum=0, maximum=100_000)
        self.universe = _choice(self, "universe", UNIVERSES)
        self.former_members = _choice(self, "former_members", FORMER_MEMBER_POLICIES)
        self.history_years = None if self.history_years is None else _int(self, "history_years", minimum=1,
                                                                            maximum=100)
        self.settle_sessions = _int(self, "settle_sessions", minimum=0, maximum=20)
        self.max_cell_retries = _int(self, "max_cell_retries", minimum=0, maximum=20)
        self.rate_limit_seconds = _float(self, "rate_limit_seconds", minimum=0.0, maximum=3600.0)
        self.rate_burst = None if self.rate_burst is None else _int(self, "rate_burst", minimum=1, maximum=10_000)
        self.max_retries = _int(self, "max_retries", minimum=0, maximum=20)
        self.retry_delay = _float(self, "retry_delay", minimum=0.0, maximum=600.0)
        self.max_retry_after = _float(self, "max_retry_after", minimum=0.0, maximum=86_400.0)
        self.request_timeout = _float(self, "request_timeout", minimum=0.1, maximum=600.0)
        self.max_response_mb = _float(self, "max_response_mb", minimum=1.0, maximum=4096.0)
        self.max_processing_time = _float(self, "max_processing_time", minimum=1.0, maximum=7 * 86400.0)
        self.max_memory_usage = _float(self, "max_memory_usage", minimum=64.0, maximum=1_048_576.0)
        self.parallel_processing = _bool(self, "parallel_processing")
        self.max_workers = _int(self, "max_workers", minimum=1, maximum=64)
        self.min_data_quality_score = _float(self, "min_data_quality_score", minimum=0.0, maximum=1.0)
        self.enable_performance_monitoring = _bool(self, "enable_performance_monitoring")
        self.enable_audit_trail = _bool(self, "enable_audit_trail")
        self.history_start = _date(self, "history_start")
        self.macro_series = _series(self)
        self.ora_python_driver_type = _choice(self, "ora_python_driver_type", ("thin", "thick"))
        for name in ("polygon_base_url", "sp500_url", "fred_base_url"):
            if not str(getattr(self, name)).startswith(("http://", "https://")):
                _bad(self, name, "an http:// or https:// URL")
            setattr(self, name, str(getattr(self, name)).rstrip("/"))
        for name in ("polygon_api_key", "fred_api_key"):
            # HTTP headers carry keys as ASCII: anything else would fail on the first request.
            if getattr(self, name) is not None and not _PRINTABLE_ASCII.fullmatch(getattr(self, name)):
                _bad(self, name, "printable ASCII characters without spaces (as the vendor issues keys)")

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
            elif f.name.endswith("_url") and value:
                value = redact_http_url(value)
            elif isinstance(value, dt.date):
                value = value.isoformat()
            out[f.name] = value
        return out

    def secrets(self) -> list[str]:
        """Every secret value this run knows (and its URL-encoded form), for scrubbing output."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        if self.database_url:
            from sqlalchemy.engine import make_url
            try:
                values.append(make_url(self.database_url).password)
            except Exception:  # an unparsable URL fails later with its own message
                pass
        for name in ("polygon_base_url", "sp500_url", "fred_base_url"):
            values.append(urlsplit(getattr(self, name)).password)
        values = [v for v in values if v]
        return sorted(set(values) | {quote(v, safe="") for v in values})

    def _read_environment(self, environ: Mapping[str, str]) -> None:
        for f in fields(self):
            if getattr(self, f.name) is not FROM_ENV:
                continue
            value = None
            for name in (ENV_VARS[f.name], *ALIASES.get(f.name, ())):
                text = environ.get(name)
                if text is not None and text.strip():
                    value = text.strip()
                    break
            setattr(self, f.name, DEFAULTS.get(f.name) if value is None else value)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "AdvancedBatchConfig":
        """Build from ``environ`` (default: the process environment); ``overrides`` win."""
        return cls(environ=environ, **overrides)


BatchConfig = AdvancedBatchConfig


def read_environment(dotenv: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment over the ``.env`` file (python-dotenv's rules; the environment wins).

    The file is read once as bytes, so a named pipe (a secrets manager's) works as well as a file."""
    from dotenv import dotenv_values

    if not dotenv.exists() or dotenv.is_dir():
        return dict(environ)
    try:
        raw = dotenv.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {dotenv}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{dotenv} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line}; "
                          "expected KEY=value lines saved as UTF-8") from None
    values = dotenv_values(stream=io.StringIO(text))
    return {**{k: v for k, v in values.items() if v is not None}, **environ}


def redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def redact_http_url(url: str) -> str:
    """An HTTP URL without the credentials it may carry (user info, a key in the query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    query = "***" if parts.query and re.search(r"key|token|secret|password", parts.query, re.I) else parts.query
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _bad(config: AdvancedBatchConfig, name: str, allowed: str) -> NoReturn:
    value = getattr(config, name)
    shown = "***" if name in SECRET_FIELDS else repr(value)
    raise ConfigError(f"{ENV_VARS[name]}={shown} is not allowed: expected {allowed}.")


def _int(config: AdvancedBatchConfig, name: str, *, minimum: int, maximum: int) -> int:
    value = getattr(config, name)
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not (minimum <= number <= maximum):
        _bad(config, name, f"a whole number from {minimum} to {maximum}")
    return number


def _float(config: AdvancedBatchConfig, name: str, *, minimum: float, maximum: float) -> float:
    value = getattr(config, name)
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number != number or not (minimum <= number <= maximum):
        _bad(config, name, f"a number from {minimum:g} to {maximum:g}")
    return number


def _bool(config: AdvancedBatchConfig, name: str) -> bool:
    value = getattr(config, name)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    _bad(config, name, "true or false (also 1/0, yes/no, on/off)")


def _choice(config: AdvancedBatchConfig, name: str, allowed: tuple[str, ...]) -> str:
    text = str(getattr(config, name)).strip().lower()
    if text not in allowed:
        _bad(config, name, " or ".join(allowed))
    return text


def _date(config: AdvancedBatchConfig, name: str) -> Optional[dt.date]:
    value = getattr(config, name)
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        _bad(config, name, "a date as YYYY-MM-DD")


def _series(config: AdvancedBatchConfig) -> tuple[str, ...]:
    value = config.macro_series
    items = value if isinstance(value, (tuple, list)) else str(value).split(",")
    series = tuple(dict.fromkeys(s.strip().upper() for s in items if s.strip()))
    if any(not re.fullmatch(r"[A-Z0-9_]{1,40}", s) for s in series):
        _bad(config, "macro_series", "comma-separated FRED series ids such as FEDFUNDS,CPIAUCSL")
    return series
