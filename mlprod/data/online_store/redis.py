"""``RedisOnlineStore``: one sorted set per ``(table, key)``, score ``at``, member the compact
JSON ``[id, v0, ...]``.

A request's reads are one script call returning one JSON text (per-row replies would cost more
to parse than the rest of the read); writes are pipelined ``ZADD NX`` in batches of 10,000 rows.
Scores are doubles, exact for ``|at| < 2**53`` µs (1685..2255). Redis knows a row by its whole
member, so an event id written again with *different* values becomes a second row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa
import redis

from mlprod.data.online_store._shared import (
    _JSON,
    Decoder,
    Freshness,
    OnlineRows,
    Read,
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
from mlprod.data.postgres import redact
from mlprod.errors import OnlineStoreError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Every read of a request in one call: KEYS[1] the layouts, KEYS[1 + i] read i's sorted set;
# ARGV: m, m table ids, then per read: since, until, latest. Returns the m layouts and one JSON
# text of all rows: per read [at, member, at, member, ...] (per-row string work in Lua would
# cost more than the rest of the read).
_READ_LUA = """
local m = tonumber(ARGV[1])
local out = {}
for i = 1, m do out[i] = redis.call('HGET', KEYS[1], ARGV[1 + i]) or '' end
local parts = {}
for i = 2, #KEYS do
  local a = m + 2 + (i - 2) * 3
  local hi, rows = '(' .. ARGV[a + 1], {}
  if ARGV[a + 2] == '1' then
    local top = redis.call('ZREVRANGEBYSCORE', KEYS[i], hi, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #top > 0 then rows = redis.call('ZRANGEBYSCORE', KEYS[i], top[2], top[2], 'WITHSCORES') end
  else
    rows = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[a], hi, 'WITHSCORES')
  end
  local items = {}
  for j = 1, #rows, 2 do
    items[j], items[j + 1] = rows[j + 1], rows[j]
  end
  parts[#parts + 1] = '[' .. table.concat(items, ',') .. ']'
end
out[m + 1] = '[' .. table.concat(parts, ',') .. ']'
return out
"""
# Drop rows with at < ARGV[1] from each key; ARGV[2] == '1' keeps the latest rows before it.
_PRUNE_LUA = """
local dropped = 0
for _, key in ipairs(KEYS) do
  local cut = '(' .. ARGV[1]
  if ARGV[2] == '1' then
    local top = redis.call('ZREVRANGEBYSCORE', key, cut, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    cut = top[2] and ('(' .. top[2]) or nil
  end
  if cut then dropped = dropped + redis.call('ZREMRANGEBYSCORE', key, '-inf', cut) end
end
return dropped
"""
# Freshness of source ARGV[1] as "latest|rows|updated": the larger latest, rows added up.
_MARK_LUA = """
local latest, rows = ARGV[2], tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local l, r = string.match(old, '^(-?%d*)|(%d+)|')
  if l ~= '' and (latest == '' or tonumber(l) > tonumber(latest)) then latest = l end
  rows = rows + tonumber(r)
end
redis.call('HSET', KEYS[1], ARGV[1], latest .. '|' .. string.format('%.0f', rows) .. '|' .. ARGV[4])
"""
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")
_EXACT = 2**53  # scores are doubles
_BATCH = 10_000


def _at_then_id(pair: tuple[int, list[Any]]) -> tuple[int, str]:
    return pair[0], pair[1][0]


_REDIS_DECODERS: dict[ValueType, Decoder] = {
    "timestamp": each(from_micros),
    "date": each(_from_days),
}


def _decoders(kinds: Sequence[ValueType]) -> list[tuple[int, Decoder]]:
    return [(i, _REDIS_DECODERS[k]) for i, k in enumerate(kinds) if k in _REDIS_DECODERS]


def _redis_column(array: pa.Array, kind: ValueType) -> list[Any]:
    if kind == "timestamp":
        return array.cast(pa.int64()).to_pylist()  # type: ignore[no-any-return]
    if kind == "date":
        return array.cast(pa.int32()).to_pylist()  # type: ignore[no-any-return]
    return array.to_pylist()  # type: ignore[no-any-return]


class RedisOnlineStore:
    """The online store in Redis: a sorted set per (table, key) under ``{namespace}:``."""

    def __init__(self, url: str = DEFAULT_REDIS_URL, namespace: str = "mlprod") -> None:
        if not _NAMESPACE.match(namespace):
            raise OnlineStoreError(
                f"the online store namespace '{namespace}' may hold only letters, digits, "
                "'_', '.' and '-'"
            )
        self.url, self.namespace = url, namespace
        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        except ValueError as exc:
            raise OnlineStoreError(
                f"online.url '{redact(url)}' is not a Redis URL ({exc}); "
                f"expected e.g. {DEFAULT_REDIS_URL}"
            ) from None
        self._read_script = self._redis.register_script(_READ_LUA)
        self._prune_script = self._redis.register_script(_PRUNE_LUA)
        self._mark_script = self._redis.register_script(_MARK_LUA)
        self._layouts_key = f"{namespace}:layouts"
        self._freshness_key = f"{namespace}:freshness"

    def _zkey(self, table: str, key: str) -> str:
        return f"{self.namespace}:t:{table}:{key}"

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        shown = redact(self.url)
        try:
            yield
        except redis.AuthenticationError as exc:
            raise OnlineStoreError(
                f"Redis at {shown} refused the credentials ({exc}); fix the user and password "
                "in online.url"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OnlineStoreError(
                f"cannot {doing} the online store: Redis at {shown} does not answer ({exc}). "
                "Start Redis there, or set online.url in mlprod.yaml to a Redis server that runs."
            ) from None
        except redis.RedisError as exc:
            raise OnlineStoreError(
                f"Redis at {shown} refused to {doing} the online store: {exc}"
            ) from None

    def _stored_layouts(self) -> dict[str, TableLayout]:
        with self._errors("read"):
            stored: dict[bytes, bytes] = self._redis.hgetall(self._layouts_key)  # type: ignore[assignment]
        return {table.decode(): _decode_layout(text) for table, text in stored.items()}

    def _scan(self, pattern: str) -> Iterator[list[bytes]]:
        """The keys matching a pattern (ours hold no glob characters), in chunks."""
        chunk: list[bytes] = []
        for key in self._redis.scan_iter(match=pattern, count=1000):
            chunk.append(key)
            if len(chunk) == 1000:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def declare(self, layouts: Mapping[str, TableLayout], recreate: bool = False) -> None:
        stored = self._stored_layouts()
        for table, layout in layouts.items():
            old = stored.get(_check_id("online table", table))
            if old is not None and old != layout and not recreate:
                raise _layout_error(table, old, layout)
        with self._errors("declare tables in"):
            for table, layout in layouts.items():
                if stored.get(table, layout) != layout:
                    for keys in self._scan(self._zkey(table, "*")):
                        self._redis.unlink(*keys)
                self._redis.hset(self._layouts_key, table, _encode_layout(layout))

    def write(self, table: str, rows: pa.Table) -> int:
        with self._errors("write to"):
            text = self._redis.hget(self._layouts_key, _check_id("online table", table))
        if text is None:
            raise _undeclared(table, redact(self.url))
        batch = _prepare(table, rows, _decode_layout(text))  # type: ignore[arg-type]
        if batch.ats and max(abs(min(batch.ats)), abs(max(batch.ats))) >= _EXACT:
            raise OnlineStoreError(
                f"rows written to online table '{table}' have __at outside the years 1685..2255, "
                "which Redis scores cannot hold exactly"
            )
        columns = [_redis_column(a, k) for a, k in zip(batch.values, batch.types, strict=True)]
        members = [_JSON(row) for row in zip(batch.ids, *columns, strict=True)]
        applied = 0
        with self._errors("write to"):
            for start in range(0, len(members), _BATCH):
                grouped: dict[str, list[Any]] = {}
                for key, at, member in zip(
                    batch.keys[start : start + _BATCH],
                    batch.ats[start : start + _BATCH],
                    members[start : start + _BATCH],
                    strict=True,
                ):
                    grouped.setdefault(key, []).extend((at, member))
                pipe = self._redis.pipeline(transaction=False)
                for key, flat in grouped.items():
                    pipe.execute_command("ZADD", self._zkey(table, key), "NX", *flat)  # type: ignore[no-untyped-call]
                applied += sum(pipe.execute())
        return applied

    def read(self, reads: Sequence[Read]) -> list[OnlineRows]:
        if not reads:
            return []
        tables = sorted({_check_id("online table", read.table) for read in reads})
        keys, live = [self._layouts_key], []
        args: list[str | int] = [len(tables), *tables]
        for i, read in enumerate(reads):
            key = canonical_key(read.key)
            if key is not None:
                live.append(i)
                keys.append(self._zkey(read.table, key))
                since = "-inf" if read.since is None else read.since
                args.extend((since, read.until, int(read.latest)))
        with self._errors("read from"):
            reply = self._read_script(keys=keys, args=args)
        stored = dict(zip(tables, reply[:-1], strict=True))
        for read in reads:
            if not stored[read.table]:
                raise _undeclared(read.table, redact(self.url))
        layouts = {table: _decode_layout(text) for table, text in stored.items()}
        for read in reads:
            _check_read(read, layouts[read.table])
        decoders = {
            table: [
                (i, _REDIS_DECODERS[k]) for i, k in enumerate(kinds.values) if k in _REDIS_DECODERS
            ]
            for table, kinds in layouts.items()
        }
        widths = {table: len(layout.values) for table, layout in layouts.items()}
        out = [_block([], 1, widths[read.table], []) for read in reads]
        for i, flat in zip(live, json.loads(reply[-1]), strict=True):
            ats: list[int] = list(map(int, flat[0::2]))  # at and member alternate
            members: list[list[Any]] = flat[1::2]
            if len(set(ats)) < len(ats):  # Redis orders ties by member bytes, not by event id
                pairs = sorted(zip(ats, members, strict=True), key=_at_then_id)
                ats, members = [p[0] for p in pairs], [p[1] for p in pairs]
            out[i] = _block(members, 1, widths[reads[i].table], decoders[reads[i].table], ats)
        return out

    def prune(self, table: str, before: int, keep_latest: bool = True) -> int:
        if _check_id("online table", table) not in self._stored_layouts():
            raise _undeclared(table, redact(self.url))
        dropped = 0
        with self._errors("prune"):
            for keys in self._scan(self._zkey(table, "*")):
                dropped += self._prune_script(keys=keys, args=[before, int(keep_latest)])
        return dropped

    def mark_applied(self, source: str, latest_at: datetime | None, rows: int) -> None:
        latest = "" if latest_at is None else micros(latest_at)
        with self._errors("record freshness in"):
            self._mark_script(keys=[self._freshness_key], args=[source, latest, rows, _now()])

    def freshness(self) -> dict[str, Freshness]:
        with self._errors("read freshness from"):
            stored: dict[bytes, bytes] = self._redis.hgetall(self._freshness_key)  # type: ignore[assignment]
        out: dict[str, Freshness] = {}
        for source, text in sorted(stored.items()):
            latest, rows, updated = text.decode().split("|")
            out[source.decode()] = Freshness(
                from_micros(int(latest)) if latest else None, int(rows), from_micros(int(updated))
            )
        return out

    def ping(self) -> None:
        with self._errors("reach"):
            self._redis.ping()

    def clear(self) -> None:
        with self._errors("clear"):
            for keys in self._scan(f"{self.namespace}:*"):
                self._redis.unlink(*keys)

    def close(self) -> None:
        self._redis.close()
