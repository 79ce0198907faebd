"""Rows of a SQL query through SQLAlchemy, streamed with a server-side cursor.

The database URL is read from the referenced Secret and never logged: errors name the Secret, not
the URL. The read is bounded in time by the read deadline (`deadline.WaitDeadline`, counted while
waiting on the database): past it a watchdog interrupts the query (sqlite3 `interrupt`, psycopg
`cancel`, else it closes the connection) and the read fails retryably. Where the dialect has one, a
statement timeout of the same length also stops the query on the server. A value longer than the
per-document limit is a counted `too_long` rejection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ... import secrets
from ...api.datasource import SqlSource
from ..formats import BadSpec, Raw, Rejected
from . import InputRef, SourceError
from .deadline import WaitDeadline, seconds_from_env

#: rows fetched per wait on the database (and held in memory at once)
BATCH_ROWS = 1000
#: the keyword of each driver's connect timeout, in seconds, so that connecting is bounded too
CONNECT_TIMEOUT_ARGUMENTS = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "pg8000": "timeout",
}


def query_ref(index: int, source: SqlSource) -> InputRef:
    return InputRef(index, f"sql://{source.url_secret.name}/{source.url_secret.key}")


def statement_timeout(dialect: str, seconds: float) -> str | None:
    """The statement that bounds each statement of the session on the server, where the dialect has one."""
    milliseconds = max(1, int(seconds * 1000))
    if dialect == "postgresql":
        return f"SET statement_timeout = {milliseconds}"
    if dialect == "mysql":
        return f"SET SESSION max_execution_time = {milliseconds}"
    if dialect == "mariadb":
        return f"SET SESSION max_statement_time = {seconds:.3f}"
    return None


class _Interrupter:
    """Ends a call blocked on the DBAPI connection; run by the watchdog thread."""

    def __init__(self) -> None:
        self.connection: Any = None

    def __call__(self) -> None:
        connection = self.connection
        if connection is None:  # still connecting: the driver's connect timeout bounds that
            return
        for name in ("interrupt", "cancel"):  # sqlite3; psycopg2 and psycopg
            method = getattr(connection, name, None)
            if callable(method):
                method()
                return
        connection.close()


def document(value: object, limit: int) -> Raw | Rejected:
    """One row's text: kept when it is text of at most `limit` UTF-8 bytes, else a counted rejection."""
    if not isinstance(value, (str, bytes)):
        return Rejected("missing_text_field")
    if len(value) > limit or (isinstance(value, str) and 4 * len(value) > limit and _utf8_size(value) > limit):
        return Rejected("too_long")
    return Raw(value)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def iter_rows(source: SqlSource, limit: int) -> Iterator[Raw | Rejected]:
    import sqlalchemy

    where = f"the database in Secret {source.url_secret.name}/{source.url_secret.key}"
    try:
        url = secrets.read_secret(source.url_secret.name, source.url_secret.key)
    except secrets.MissingSecret as exc:
        raise SourceError(str(exc)) from None
    seconds = seconds_from_env()
    try:
        engine = sqlalchemy.create_engine(
            url, connect_args=_connect_arguments(sqlalchemy.engine.make_url(url), seconds)
        )
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise SourceError(f"{where}: not a usable SQLAlchemy URL ({type(exc).__name__})") from None
    interrupt = _Interrupter()
    try:
        with WaitDeadline(where, interrupt, seconds) as clock:
            yield from _rows(engine, source, where, clock, interrupt, limit)
    finally:
        engine.dispose()


def _connect_arguments(url: Any, seconds: float) -> dict[str, Any]:
    keyword = CONNECT_TIMEOUT_ARGUMENTS.get(url.get_driver_name())
    if keyword is None or keyword in url.query:
        return {}
    return {keyword: max(1, int(seconds))}


def _rows(
    engine: Any, source: SqlSource, where: str, clock: WaitDeadline, interrupt: _Interrupter, limit: int
) -> Iterator[Raw | Rejected]:
    import sqlalchemy

    try:
        with clock.waiting():
            connection = engine.connect()
    except sqlalchemy.exc.DBAPIError as exc:
        raise SourceError(f"{where}: cannot connect ({type(exc.orig).__name__})", retryable=True) from None
    with connection:
        interrupt.connection = connection.connection.dbapi_connection
        try:
            with clock.waiting():
                _limit_statements(connection, clock.seconds)
                result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
                    sqlalchemy.text(source.query)
                )
            position = _text_position(list(result.keys()), source.text_column)
            while True:
                with clock.waiting():
                    rows = result.fetchmany(BATCH_ROWS)
                if not rows:
                    return
                for row in rows:
                    yield document(row[position], limit)
        except sqlalchemy.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise SourceError(f"{where}: connection lost ({type(exc.orig).__name__})", retryable=True) from None
            detail = str(exc.orig).splitlines()[0][:200] if exc.orig else type(exc).__name__
            raise SourceError(f"{where}: the query failed ({detail}); check spec.sources.sql.query") from None


def _limit_statements(connection: Any, seconds: float) -> None:
    import sqlalchemy

    statement = statement_timeout(connection.dialect.name, seconds)
    if statement is None:
        return
    try:
        connection.exec_driver_sql(statement)
    except sqlalchemy.exc.DBAPIError:  # a server without the setting: the watchdog still bounds the read
        connection.rollback()


def _text_position(columns: list[str], text_column: str) -> int:
    if text_column not in columns:
        raise BadSpec(
            f"spec.sources.sql.textColumn: the query returns no column {text_column!r} (columns: {', '.join(columns)})"
        )
    return columns.index(text_column)
