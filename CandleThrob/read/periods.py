"""The year or month of a date column, in each database's cheapest spelling.

SQLAlchemy's ``extract`` becomes ``CAST(STRFTIME(...) AS INTEGER)`` on SQLite,
which parses every date of a full scan; SQLite stores dates as ISO text, so
cutting the string is the same answer at a third of the cost there.
"""

from __future__ import annotations

from sqlalchemy import Integer, cast, extract, func
from sqlalchemy.sql.elements import ColumnElement


def year_of(column: ColumnElement, backend: str) -> ColumnElement:
    if backend == "sqlite":
        return cast(func.substr(column, 1, 4), Integer)
    return extract("year", column)


def month_of(column: ColumnElement, backend: str) -> ColumnElement:
    if backend == "sqlite":
        return cast(func.substr(column, 6, 2), Integer)
    return extract("month", column)
