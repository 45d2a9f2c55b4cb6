"""``SqliteOnlineStore``: the embedded default, one file in WAL mode so other processes read
while one writes.

One table per online table, clustered on ``(key, at, id)`` (``WITHOUT ROWID``) so a read is one
contiguous range scan, with a unique ``(key, id)`` for idempotence. SQLite turns NaN into NULL,
so a NaN float is stored as the text ``'NaN'``.

An aggregate over a long window can be summarized by SQLite itself (``read_summarized``, see
:mod:`.sqlite_summaries`), exactly, without bringing hundreds of rows into Python; where that
would not be exact (a NaN, a fraction, an overflow) the rows are read instead, in the same
snapshot.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from mlprod.data.online_store._shared import (
    Decoder,
    Freshness,
    OnlineRows,
    Read,
    Summarize,
    Summary,
    TableLayout,
    ValueType,
    _block,
    _check_id,
    _check_read,
    _decode_layout,
    _encode_layout,
    _from_days,
    _layout_error,
    _now,
    _prepare,
    _undeclared,
    canonical_key,
    each,
    from_micros,
    micros,
)
from mlprod.data.online_store.sqlite_summaries import (
    NUMERIC,
    WHOLE_TABLE,
    Part,
    decode_whole,
    encode_whole,
    statement_text,
    summary_of,
    whole_check,
    whole_columns,
)
from mlprod.data.online_store.sqlite_summaries import SETUP as _SUMMARY_SETUP
from mlprod.errors import OnlineStoreError

_SQL_TYPES: dict[ValueType, str] = {
    "int": "INTEGER",
    "float": "REAL",
    "string": "TEXT",
    "bool": "INTEGER",
    "timestamp": "INTEGER",  # epoch microseconds
    "date": "INTEGER",  # days since 1970-01-01
}
_LAYOUTS = "mlprod_online_layouts"
_FRESHNESS = "mlprod_online_freshness"
_SETUP = (
    f"CREATE TABLE IF NOT EXISTS {_LAYOUTS} (table_id TEXT PRIMARY KEY, layout TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {_FRESHNESS} (source TEXT PRIMARY KEY, latest_at INTEGER, "
    "rows INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
    _SUMMARY_SETUP,
)
_MARK = (
    f"INSERT INTO {_FRESHNESS} (source, latest_at, rows, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (source) DO UPDATE SET latest_at = MAX(COALESCE(latest_at, excluded.latest_at), "
    "COALESCE(excluded.latest_at, latest_at)), rows = rows + excluded.rows, "
    "updated_at = excluded.updated_at"
)
_PLACEHOLDER = "__online_table__"


def _sql(template: str, table: str) -> str:
    """Render a statement on an online table: the name is quoted by sqlglot, never pasted."""
    name = exp.to_identifier(f"online_{_check_id('online table', table)}", quoted=True)

    def rename(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and node.name == _PLACEHOLDER:
            node.set("this", name.copy())
        elif isinstance(node, exp.Column) and node.table == _PLACEHOLDER:
            node.set("table", name.copy())
        return node

    return sqlglot.parse_one(template, read="sqlite").transform(rename).sql("sqlite")


@dataclass(frozen=True)
class _Statements:
    """The SQL of one online table, rendered once per layout."""

    create: str
    insert: str
    range: str
    latest: str
    prune_keep: str
    prune_all: str
    drop: str
    decoders: list[tuple[int, Decoder]]

    @classmethod
    def of(cls, table: str, layout: TableLayout) -> _Statements:
        values = [f'"v{i}"' for i in range(len(layout.values))]
        typed = [f"{v} {_SQL_TYPES[t]}" for v, t in zip(values, layout.values, strict=True)]
        listed = ", ".join(['"at"', *values])  # ordered by id, which is not fetched
        t = _PLACEHOLDER
        create = _sql(
            f'CREATE TABLE IF NOT EXISTS {t} ("key" TEXT NOT NULL, "at" INTEGER NOT NULL, '
            f'"id" TEXT NOT NULL, {"".join(c + ", " for c in typed)}'
            'PRIMARY KEY ("key", "at", "id"), UNIQUE ("key", "id"))',
            table,
        )
        return cls(
            create=create + " WITHOUT ROWID",  # sqlglot cannot say it; clusters rows by key, at
            insert=_sql(
                f"INSERT OR IGNORE INTO {t} VALUES ({', '.join(['?'] * (len(values) + 3))})", table
            ),
            range=_sql(
                f'SELECT {listed} FROM {t} WHERE "key" = ? AND "at" >= ? AND "at" < ? '
                'ORDER BY "at", "id"',
                table,
            ),
            latest=_sql(
                f'SELECT {listed} FROM {t} WHERE "key" = ? AND "at" = (SELECT MAX("at") '
                f'FROM {t} WHERE "key" = ? AND "at" < ?) ORDER BY "at", "id"',
                table,
            ),
            prune_keep=_sql(
                f'DELETE FROM {t} WHERE "at" < ? AND "at" < (SELECT MAX(l."at") FROM {t} AS l '
                f'WHERE l."key" = {t}."key" AND l."at" < ?)',
                table,
            ),
            prune_all=_sql(f'DELETE FROM {t} WHERE "at" < ?', table),
            drop=_sql(f"DROP TABLE IF EXISTS {t}", table),
            decoders=[
                (i, _SQLITE_DECODERS[kind])
                for i, kind in enumerate(layout.values)
                if kind in _SQLITE_DECODERS
            ],
        )


def _floats(values: Sequence[Any]) -> Sequence[Any]:
    """A REAL column: a NaN is stored as the text 'NaN' (rare: decode only then)."""
    if "NaN" not in values:
        return values
    return [float(v) if isinstance(v, str) else v for v in values]


_SQLITE_DECODERS: dict[ValueType, Decoder] = {
    "float": _floats,
    "bool": each(bool),
    "timestamp": each(from_micros),
    "date": each(_from_days),
}
_LOWEST = -(2**63)


def _sqlite_column(array: pa.Array, kind: ValueType) -> list[Any]:
    if kind == "timestamp":
        return array.cast(pa.int64()).to_pylist()  # type: ignore[no-any-return]
    if kind == "date":
        return array.cast(pa.int32()).to_pylist()  # type: ignore[no-any-return]
    values: list[Any] = array.to_pylist()
    if kind == "float" and pc.any(pc.is_nan(array)).as_py():
        values = ["NaN" if v is not None and math.isnan(v) else v for v in values]
    return values


class SqliteOnlineStore:
    """The online store in one local SQLite file (WAL: readers never wait for the writer).

    Each thread gets its own connection. A read runs in one transaction, so a request sees one
    snapshot, and checks the schema version so it notices a table another process rebuilt.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._layouts: dict[str, TableLayout] = {}
        self._statements: dict[str, _Statements] = {}
        self._summary_statements: dict[tuple[Any, ...], tuple[str, list[Part]]] = {}
        self._schema_version = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OnlineStoreError(
                f"cannot create the online store at {self.path}: {exc}"
            ) from None
        with self._errors("open"):
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SETUP:
                conn.execute(statement)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")  # up to 64 MiB: big writes do not spill
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise OnlineStoreError(
                f"cannot {doing} the online store at {self.path}: {exc}; check that the file "
                "is a SQLite database this user may read and write"
            ) from None

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
        conn.execute(begin)
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Reload the layouts when the schema changed (a table was made or rebuilt)."""
        version: int = conn.execute("PRAGMA schema_version").fetchone()[0]
        if version != self._schema_version:
            rows = conn.execute(f"SELECT table_id, layout FROM {_LAYOUTS}").fetchall()
            self._layouts = {table: _decode_layout(text) for table, text in rows}
            self._statements = {t: _Statements.of(t, lay) for t, lay in self._layouts.items()}
            self._summary_statements = {}
            self._schema_version = version

    def _table(self, conn: sqlite3.Connection, table: str) -> tuple[TableLayout, _Statements]:
        if table not in self._layouts:
            self._schema_version = -1
            self._refresh(conn)
            if table not in self._layouts:
                raise _undeclared(table, str(self.path))
        return self._layouts[table], self._statements[table]

    def declare(self, layouts: Mapping[str, TableLayout], recreate: bool = False) -> None:
        conn = self._conn()
        changed = False
        with self._errors("declare tables in"), self._transaction(conn, "BEGIN IMMEDIATE"):
            self._refresh(conn)
            for table, layout in layouts.items():
                old = self._layouts.get(table)
                changed = changed or old != layout
                if old is not None and old != layout and not recreate:
                    raise _layout_error(table, old, layout)
                statements = _Statements.of(table, layout)
                if old is not None and old != layout:
                    conn.execute(statements.drop)
                if old != layout:  # a new, empty table: every column is whole so far
                    whole = encode_whole([kind in NUMERIC for kind in layout.values])
                    conn.execute(
                        f"INSERT OR REPLACE INTO {WHOLE_TABLE} VALUES (?, ?)", (table, whole)
                    )
                conn.execute(statements.create)
                if old == layout:
                    self._check_whole(conn, table, layout)
                conn.execute(
                    f"INSERT OR REPLACE INTO {_LAYOUTS} VALUES (?, ?)",
                    (table, _encode_layout(layout)),
                )
        if changed:  # the cached statements are stale; an unchanged declare keeps them
            self._schema_version = -1

    def write(self, table: str, rows: pa.Table) -> int:
        conn = self._conn()
        with self._errors("write to"):
            self._refresh(conn)
            layout, statements = self._table(conn, table)
            batch = _prepare(table, rows, layout)
            values = [_sqlite_column(a, k) for a, k in zip(batch.values, batch.types, strict=True)]
            with self._transaction(conn, "BEGIN IMMEDIATE"):
                before = conn.total_changes
                conn.executemany(
                    statements.insert, zip(batch.keys, batch.ats, batch.ids, *values, strict=True)
                )
                added: int = conn.total_changes - before
                if added:
                    self._mark_whole(conn, table, whole_columns(batch.values, batch.types))
                return added

    def _check_whole(self, conn: sqlite3.Connection, table: str, layout: TableLayout) -> None:
        """Find which columns are whole in a table stored before that was kept (one scan)."""
        known = conn.execute(f"SELECT 1 FROM {WHOLE_TABLE} WHERE table_id = ?", (table,))
        if known.fetchone() is not None:
            return
        text, checked = whole_check(layout, _PLACEHOLDER)
        try:
            found = conn.execute(_sql(text, table)).fetchone()
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise
            return  # ABS of the smallest integer: leave the table unknown
        whole = [False] * len(layout.values)
        for i, bad in zip(checked, found, strict=False):
            whole[i] = not bad
        conn.execute(f"INSERT INTO {WHOLE_TABLE} VALUES (?, ?)", (table, encode_whole(whole)))

    def _mark_whole(self, conn: sqlite3.Connection, table: str, batch: list[bool]) -> None:
        """A column stays whole while every batch written to it is (a table whose flags are
        unknown, made before they were kept, stays unknown: it is summarized the checked way)."""
        found = conn.execute(
            f"SELECT whole FROM {WHOLE_TABLE} WHERE table_id = ?", (table,)
        ).fetchone()
        if found is None:
            return
        old = decode_whole(found[0])
        if all(not o or b for o, b in zip(old, batch, strict=True)):
            return
        new = encode_whole([o and b for o, b in zip(old, batch, strict=True)])
        conn.execute(f"UPDATE {WHOLE_TABLE} SET whole = ? WHERE table_id = ?", (new, table))

    def read(self, reads: Sequence[Read]) -> list[OnlineRows]:
        conn = self._conn()
        out: list[OnlineRows] = []
        with self._errors("read from"), self._transaction(conn):
            self._refresh(conn)
            for read in reads:
                out.append(self._read_one(conn, read))
        return out

    def _read_one(self, conn: sqlite3.Connection, read: Read) -> OnlineRows:
        layout, statements = self._table(conn, read.table)
        _check_read(read, layout)
        key = canonical_key(read.key)
        raw: list[Any] = []
        if key is not None and read.latest:
            raw = conn.execute(statements.latest, (key, key, read.until)).fetchall()
        elif key is not None:
            since = _LOWEST if read.since is None else read.since
            raw = conn.execute(statements.range, (key, since, read.until)).fetchall()
        return _block(raw, 1, len(layout.values), statements.decoders)

    def read_summarized(
        self, reads: Sequence[Read], summaries: Sequence[Summarize]
    ) -> tuple[list[OnlineRows], list[Summary | OnlineRows]]:
        conn = self._conn()
        found: list[OnlineRows] = []
        summarized: list[Summary | OnlineRows] = []
        with self._errors("read from"), self._transaction(conn):
            self._refresh(conn)
            for read in reads:
                found.append(self._read_one(conn, read))
            if summaries:
                wholes = dict(conn.execute(f"SELECT table_id, whole FROM {WHOLE_TABLE}"))
            for want in summaries:
                summarized.append(self._summarize_one(conn, want, wholes.get(want.read.table)))
        return found, summarized

    def _summarize_one(
        self, conn: sqlite3.Connection, want: Summarize, whole_text: str | None
    ) -> Summary | OnlineRows:
        read = want.read
        layout, statements = self._table(conn, read.table)
        _check_read(read, layout)
        key = canonical_key(read.key)
        if key is None or read.latest or read.since is None:
            return self._read_one(conn, read)
        if any(layout.values[i] not in NUMERIC for i in want.totals):
            return self._read_one(conn, read)
        cache_key = (read.table, want.counts, want.orders, want.totals, want.distincts, whole_text)
        planned = self._summary_statements.get(cache_key)
        if planned is None:
            whole = (
                decode_whole(whole_text)
                if whole_text is not None
                else (False,) * len(layout.values)
            )
            text, parts = statement_text(layout, want, whole, _PLACEHOLDER)
            planned = self._summary_statements[cache_key] = (_sql(text, read.table), parts)
        statement, parts = planned
        try:
            record = conn.execute(statement, (key, read.since, read.until)).fetchone()
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise
            return self._read_one(conn, read)  # a sum past int64
        summary = summary_of(record, parts, dict(statements.decoders))
        return self._read_one(conn, read) if summary is None else summary

    def prune(self, table: str, before: int, keep_latest: bool = True) -> int:
        conn = self._conn()
        with self._errors("prune"), self._transaction(conn, "BEGIN IMMEDIATE"):
            _, statements = self._table(conn, table)
            if keep_latest:
                return conn.execute(statements.prune_keep, (before, before)).rowcount
            return conn.execute(statements.prune_all, (before,)).rowcount

    def mark_applied(self, source: str, latest_at: datetime | None, rows: int) -> None:
        latest = None if latest_at is None else micros(latest_at)
        with self._errors("record freshness in"):
            self._conn().execute(_MARK, (source, latest, rows, _now()))

    def freshness(self) -> dict[str, Freshness]:
        with self._errors("read freshness from"):
            rows = self._conn().execute(f"SELECT * FROM {_FRESHNESS} ORDER BY source").fetchall()
        return {
            source: Freshness(
                None if latest is None else from_micros(latest), count, from_micros(updated)
            )
            for source, latest, count, updated in rows
        }

    def ping(self) -> None:
        with self._errors("read"):
            self._conn().execute(f"SELECT COUNT(*) FROM {_LAYOUTS}").fetchone()

    def clear(self) -> None:
        conn = self._conn()
        with self._errors("clear"), self._transaction(conn, "BEGIN IMMEDIATE"):
            for (table,) in conn.execute(f"SELECT table_id FROM {_LAYOUTS}").fetchall():
                conn.execute(_sql(f"DROP TABLE IF EXISTS {_PLACEHOLDER}", table))
            conn.execute(f"DELETE FROM {_LAYOUTS}")
            conn.execute(f"DELETE FROM {WHOLE_TABLE}")
            conn.execute(f"DELETE FROM {_FRESHNESS}")
        self._schema_version = -1

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
