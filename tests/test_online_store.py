"""The online store backends: one behaviour, checked on each of them for real (Redis included)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pydantic
import pytest
import redis

from mlprod.data.online_store import (
    Freshness,
    MemoryOnlineStore,
    OnlineRows,
    OnlineSpec,
    OnlineStore,
    OnlineStoreError,
    Read,
    RedisOnlineStore,
    SqliteOnlineStore,
    TableLayout,
    micros,
    open_online_store,
)
from tests.expect import raises

REDIS_URL = os.environ.get("MLPROD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EVERY_TYPE = TableLayout(2, ("int", "float", "string", "bool", "timestamp", "date"))
ONE_INT = TableLayout(1, ("int",))
T0 = micros(datetime(2013, 1, 1, 5, 0, 0, 1))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    """Each backend, empty; Redis under a namespace of its own, deleted afterwards."""
    opened: OnlineStore
    if request.param == "memory":
        opened = MemoryOnlineStore()
    elif request.param == "sqlite":
        opened = SqliteOnlineStore(tmp_path / ".mlprod" / "online.sqlite")
    else:
        opened = RedisOnlineStore(REDIS_URL, f"mlprod_test_{uuid.uuid4().hex}")
        try:
            opened.ping()
        except OnlineStoreError as exc:
            pytest.fail(f"{exc}\n(or point MLPROD_TEST_REDIS_URL at a server)", pytrace=False)
    yield opened
    opened.clear()
    opened.close()


def rows(layout: TableLayout, records: list[tuple[Any, ...]]) -> pa.Table:
    """Rows as (k0.., at µs, id, v0..) tuples -> the Arrow table ``write`` takes."""
    types = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    types |= {"timestamp": pa.timestamp("us"), "date": pa.date32()}
    columns = (
        list(zip(*records, strict=True))
        if records
        else [()] * (layout.keys + 2 + len(layout.values))
    )
    data: dict[str, pa.Array] = {}
    for i in range(layout.keys):
        data[f"__k{i}"] = pa.array(columns[i])
    data["__at"] = pa.array(
        [
            None if at is None else datetime(1970, 1, 1) + timedelta(microseconds=at)
            for at in columns[layout.keys]
        ],
        pa.timestamp("us"),
    )
    data["__id"] = pa.array(columns[layout.keys + 1], pa.string())
    for i, kind in enumerate(layout.values):
        data[f"__v{i}"] = pa.array(columns[layout.keys + 2 + i], types[kind])
    return pa.table(data)


NAN = "<NaN>"  # NaN != NaN: rows compare with this in its place


def flat(found: OnlineRows) -> list[tuple[Any, ...]]:
    def same(value: Any) -> Any:
        return NAN if isinstance(value, float) and math.isnan(value) else value

    return [tuple(map(same, row)) for row in found.rows()]


STAMP = datetime(2013, 1, 1, 5, 0, 0, 999_999)
EVENTS = [
    (1, "a", T0, "e1", 7, 2.0, "x", True, STAMP, date(2013, 1, 1)),
    (1, "a", T0 + 1, "e4", -(2**62), math.inf, "", False, datetime(1900, 2, 3), date(1800, 1, 2)),
    (1, "a", T0 + 2, "e3", None, math.nan, None, None, None, None),
    (1, "a", T0 + 2, "e2", 0, -0.5, "é\"'\\", True, STAMP, date(2100, 12, 31)),
    (2, "a", T0, "e9", 1, 1.5, "y", False, STAMP, date(2013, 1, 1)),
    (None, "a", T0, "e7", 1, 1.5, "y", False, STAMP, date(2013, 1, 1)),  # a null key part
    (1, "a", None, "e8", 1, 1.5, "y", False, STAMP, date(2013, 1, 1)),  # never available
]


def test_round_trip_keeps_every_type_and_the_bounds(store: OnlineStore) -> None:
    store.declare({"every": EVERY_TYPE, "other": ONE_INT})
    assert store.write("every", rows(EVERY_TYPE, EVENTS)) == 5
    store.write("other", rows(ONE_INT, [("a", T0, "o1", 3)]))

    def read(until: int, since: int | None = None, latest: bool = False) -> list[Any]:
        return flat(store.read([Read("every", (1, "a"), until, since, latest)])[0])

    every = read(T0 + 3)
    assert [r[0] for r in every] == [T0, T0 + 1, T0 + 2, T0 + 2]
    assert every[0] == (T0, 7, 2.0, "x", True, STAMP, date(2013, 1, 1))
    assert every[1] == (
        T0 + 1,
        -(2**62),
        math.inf,
        "",
        False,
        datetime(1900, 2, 3),
        date(1800, 1, 2),
    )
    assert every[2] == (T0 + 2, 0, -0.5, "é\"'\\", True, STAMP, date(2100, 12, 31))  # e2 < e3
    assert every[3] == (T0 + 2, None, NAN, None, None, None, None)
    assert [type(v) for v in every[0][1:]] == [int, float, str, bool, datetime, date]
    assert read(T0 + 2, since=T0 + 1) == [every[1]]  # since inclusive, until exclusive
    assert read(T0 + 1, since=T0) == [every[0]]
    assert read(T0, since=None) == []
    assert read(T0 + 3, latest=True) == every[2:]  # both rows tied on the latest at
    assert read(T0 + 2, latest=True) == [every[1]]
    assert read(T0 + 1, latest=True, since=T0 + 1) == [every[0]]  # latest ignores since
    assert read(T0, latest=True) == []

    found = store.read(
        [
            Read("other", ("a",), T0 + 1),
            Read("every", (np.int64(1), "a"), T0 + 1),  # the same key as 1
            Read("every", (1.0, "a"), T0 + 1),  # an integral float is the int
            Read("every", ("1", "a"), T0 + 1),  # a string is not
            Read("every", (None, "a"), T0 + 1),
            Read("every", (1, None), T0 + 1, latest=True),
            Read("every", (3, "a"), T0 + 1),
            Read("every", (2, "a"), T0 + 1, latest=True),
        ]
    )
    assert [flat(f) for f in found] == [
        [(T0, 3)],
        [every[0]],
        [every[0]],
        [],
        [],
        [],
        [],
        [(T0, 1, 1.5, "y", False, STAMP, date(2013, 1, 1))],
    ]


def test_writing_twice_applies_once(store: OnlineStore) -> None:
    store.declare({"t": ONE_INT})
    first = [("k", T0, "e1", 1), ("k", T0 + 5, "e2", 2), ("j", T0, "e1", 3)]
    assert store.write("t", rows(ONE_INT, first)) == 3
    assert store.write("t", rows(ONE_INT, first)) == 0
    again = [*first, ("k", T0 + 5, "e3", 4), ("k", T0 + 5, "e3", 4)]  # a new id, given twice
    assert store.write("t", rows(ONE_INT, again)) == 1
    assert store.write("t", rows(ONE_INT, [("k", T0 + 9, "e1", 1)])) == 0  # same id, same values
    assert store.write("t", rows(ONE_INT, [])) == 0
    (found,) = store.read([Read("t", ("k",), T0 + 10)])
    assert flat(found) == [(T0, 1), (T0 + 5, 2), (T0 + 5, 4)]


def test_ties_sort_by_event_id(store: OnlineStore) -> None:
    store.declare({"t": ONE_INT})
    ids = ["a b", "a", "a!", 'a"', "b", "ä", "A"]  # Redis alone would order JSON bytes
    store.write("t", rows(ONE_INT, [("k", T0, id_, n) for n, id_ in enumerate(ids)]))
    for latest in (False, True):
        (found,) = store.read([Read("t", ("k",), T0 + 1, latest=latest)])
        assert [ids[value] for value in found.columns[0]] == sorted(ids)


def test_prune_keeps_what_as_of_reads_need(store: OnlineStore) -> None:
    store.declare({"t": ONE_INT})
    events = [("a", T0 + at, f"e{at}{n}", at) for at, n in [(10, 0), (20, 1), (20, 2), (30, 0)]]
    store.write("t", rows(ONE_INT, [*events, ("b", T0 + 5, "b", 5), ("c", T0 + 40, "c", 40)]))

    def left() -> list[list[tuple[Any, ...]]]:
        reads = [Read("t", (key,), T0 + 100) for key in "abc"]
        return [flat(found) for found in store.read(reads)]

    assert store.prune("t", T0 + 25) == 1  # a's row at 10: 20 is a's latest before 25
    assert left() == [[(T0 + 20, 20), (T0 + 20, 20), (T0 + 30, 30)], [(T0 + 5, 5)], [(T0 + 40, 40)]]
    assert store.prune("t", T0 + 25) == 0
    assert store.prune("t", T0 + 25, keep_latest=False) == 3
    assert left() == [[(T0 + 30, 30)], [], [(T0 + 40, 40)]]


def test_sqlite_readers_in_another_process_never_wait(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path)
    store.declare({"t": ONE_INT})
    done = tmp_path / "done"
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path), str(done)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
        for batch in range(40):
            records = [("k", T0 + batch * 1000 + i, f"e{batch}_{i}", i) for i in range(1000)]
            assert store.write("t", rows(ONE_INT, records)) == 1000
            time.sleep(0.01)  # let the reader see some of the states in between
        done.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err
    counts = [int(line) for line in out.split()]
    assert counts == sorted(counts) and counts[-1] == 40_000 and len(set(counts)) > 2
    store.close()


_READER = """
import sys
from pathlib import Path
from mlprod.data.online_store import Read, SqliteOnlineStore
store = SqliteOnlineStore(sys.argv[1])
print("ready", flush=True)
while True:
    last = Path(sys.argv[2]).exists()
    print(len(store.read([Read("t", ("k",), 2**62)])[0]), flush=True)
    if last:
        break
"""


def test_layout_changes_are_refused_unless_recreated(store: OnlineStore) -> None:
    store.declare({"t": ONE_INT})
    store.write("t", rows(ONE_INT, [("k", T0, "e1", 1)]))
    store.declare({"t": ONE_INT})  # the same again: nothing changes
    assert len(store.read([Read("t", ("k",), T0 + 1)])[0]) == 1
    changed = TableLayout(1, ("float",))
    with raises(
        OnlineStoreError,
        "online table 't' is stored with 1 key part(s) and values (int) but is now declared "
        "with 1 key part(s) and values (float); materialize the online store from scratch to "
        "rebuild it",
    ):
        store.declare({"t": changed})
    store.declare({"t": changed}, recreate=True)
    assert flat(store.read([Read("t", ("k",), T0 + 1)])[0]) == []
    store.write("t", rows(changed, [("k", T0, "e1", 1.0)]))
    assert flat(store.read([Read("t", ("k",), T0 + 1)])[0]) == [(T0, 1.0)]


def test_sqlite_readers_notice_a_rebuilt_table(tmp_path: Path) -> None:
    writer, reader = (SqliteOnlineStore(tmp_path / "online.sqlite") for _ in range(2))
    writer.declare({"t": ONE_INT})
    writer.write("t", rows(ONE_INT, [("k", T0, "e1", 1)]))
    assert flat(reader.read([Read("t", ("k",), T0 + 1)])[0]) == [(T0, 1)]
    stamps = TableLayout(1, ("timestamp",))
    writer.declare({"t": stamps}, recreate=True)
    writer.write("t", rows(stamps, [("k", T0, "e1", STAMP)]))
    assert flat(reader.read([Read("t", ("k",), T0 + 1)])[0]) == [(T0, STAMP)]
    assert reader.read([]) == []
    writer.close()
    reader.close()


def test_errors_name_the_table_and_the_fix(store: OnlineStore) -> None:
    store.declare({"t": ONE_INT})
    with pytest.raises(
        OnlineStoreError, match=r"^online table 'nope' is not declared in the online"
    ):
        store.read([Read("nope", ("k",), T0)])
    with raises(
        OnlineStoreError,
        "a read of online table 't' gives a key of 2 part(s) ('k', 1); the table has 1",
    ):
        store.read([Read("t", ("k", 1), T0)])
    with raises(
        OnlineStoreError,
        "rows written to online table 't' have columns '__at', '__id', '__k0'; expected "
        "'__at', '__id', '__k0', '__v0' (its declared layout)",
    ):
        store.write("t", rows(ONE_INT, [("k", T0, "e1", 1)]).drop_columns(["__v0"]))
    with raises(
        OnlineStoreError,
        "column __v0 of rows written to online table 't' is double, which cannot be stored as "
        "int64 without loss (Float value 1.500000 was truncated converting to int64)",
    ):
        store.write("t", rows(ONE_INT, [("k", T0, "e1", 1)]).set_column(3, "__v0", pa.array([1.5])))
    with raises(
        OnlineStoreError,
        "online table 'no-dash' cannot name anything in the online store: expected letters, "
        "digits and underscores, not starting with a digit",
    ):
        store.declare({"no-dash": ONE_INT})


def test_freshness_adds_rows_and_keeps_the_latest(store: OnlineStore) -> None:
    assert store.freshness() == {}
    before = datetime.now(UTC).replace(tzinfo=None)
    store.mark_applied("flights", datetime(2013, 1, 2, 3, 4, 5, 6), 10)
    store.mark_applied("flights", datetime(2013, 1, 1), 5)  # older: latest stays
    store.mark_applied("weather", None, 0)
    found = store.freshness()
    assert list(found) == ["flights", "weather"]
    assert found["flights"].latest_at == datetime(2013, 1, 2, 3, 4, 5, 6)
    assert found["flights"].rows == 15
    assert found["weather"] == Freshness(None, 0, found["weather"].updated_at)
    after = datetime.now(UTC).replace(tzinfo=None)
    assert all(before <= f.updated_at <= after for f in found.values())
    store.clear()
    assert store.freshness() == {}


def test_redis_that_does_not_answer_says_what_to_do() -> None:
    dead = RedisOnlineStore("redis://127.0.0.1:1/0", "mlprod_test")
    message = (
        "cannot reach the online store: Redis at redis://127.0.0.1:1/0 does not answer "
        "(Error 111 connecting to 127.0.0.1:1. Connection refused.). Start Redis there, or set "
        "online.url in mlprod.yaml to a Redis server that runs."
    )
    with raises(OnlineStoreError, message):
        dead.ping()
    with raises(OnlineStoreError, message.replace("reach", "read from")):
        dead.read([Read("t", ("k",), T0)])


def test_specs_open_their_backend(tmp_path: Path) -> None:
    sqlite = open_online_store(OnlineSpec(), tmp_path, "p")
    assert isinstance(sqlite, SqliteOnlineStore)
    assert sqlite.path == tmp_path / ".mlprod" / "online.sqlite" and sqlite.path.exists()
    sqlite.close()
    assert isinstance(
        open_online_store(OnlineSpec(kind="memory"), tmp_path, "p"), MemoryOnlineStore
    )
    remote = open_online_store(OnlineSpec(kind="redis", url=REDIS_URL), tmp_path, "p")
    assert isinstance(remote, RedisOnlineStore) and remote.namespace == "p"
    remote.close()
    with pytest.raises(pydantic.ValidationError, match=r"online\.url is set but online\.kind is"):
        OnlineSpec(url=REDIS_URL)
    with raises(
        OnlineStoreError,
        "the online store namespace 'a:b' may hold only letters, digits, '_', '.' and '-'",
    ):
        RedisOnlineStore(REDIS_URL, "a:b")


def test_redis_namespaces_do_not_see_each_other() -> None:
    one = RedisOnlineStore(REDIS_URL, f"mlprod_test_{uuid.uuid4().hex}")
    two = RedisOnlineStore(REDIS_URL, f"mlprod_test_{uuid.uuid4().hex}")
    try:
        for store in (one, two):
            store.declare({"t": ONE_INT})
        one.write("t", rows(ONE_INT, [("k", T0, "e1", 1)]))
        assert flat(two.read([Read("t", ("k",), T0 + 1)])[0]) == []
        two.clear()
        assert len(one.read([Read("t", ("k",), T0 + 1)])[0]) == 1
    finally:
        one.clear()
        two.clear()
        assert not list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{one.namespace}:*"))
