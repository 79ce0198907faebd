"""Rows of a SQL query through SQLAlchemy, streamed with a server-side cursor.

The database URL is read from the referenced Secret and never logged: errors name the Secret, not
the URL.
"""

from __future__ import annotations

from collections.abc import Iterator

from ... import secrets
from ...api.datasource import SqlSource
from ..formats import BadSpec, Raw, Rejected
from . import InputRef, SourceError


def query_ref(index: int, source: SqlSource) -> InputRef:
    return InputRef(index, f"sql://{source.url_secret.name}/{source.url_secret.key}")


def iter_rows(source: SqlSource) -> Iterator[Raw | Rejected]:
    import sqlalchemy

    where = f"the database in Secret {source.url_secret.name}/{source.url_secret.key}"
    try:
        url = secrets.read_secret(source.url_secret.name, source.url_secret.key)
    except secrets.MissingSecret as exc:
        raise SourceError(str(exc)) from None
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise SourceError(f"{where}: not a usable SQLAlchemy URL ({type(exc).__name__})") from None
    try:
        try:
            connection = engine.connect()
        except sqlalchemy.exc.DBAPIError as exc:
            raise SourceError(f"{where}: cannot connect ({type(exc.orig).__name__})", retryable=True) from None
        with connection:
            try:
                result = connection.execution_options(stream_results=True, yield_per=1000).execute(
                    sqlalchemy.text(source.query)
                )
                columns = list(result.keys())
                if source.text_column not in columns:
                    raise BadSpec(
                        f"spec.sources.sql.textColumn: the query returns no column {source.text_column!r}"
                        f" (columns: {', '.join(columns)})"
                    )
                position = columns.index(source.text_column)
                for row in result:
                    value = row[position]
                    yield Raw(value) if isinstance(value, (str, bytes)) else Rejected("missing_text_field")
            except sqlalchemy.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise SourceError(f"{where}: connection lost ({type(exc.orig).__name__})", retryable=True) from None
                detail = str(exc.orig).splitlines()[0][:200] if exc.orig else type(exc).__name__
                raise SourceError(f"{where}: the query failed ({detail}); check spec.sources.sql.query") from None
    finally:
        engine.dispose()
