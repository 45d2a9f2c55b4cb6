"""Online features from the same definitions: materialize, push, and the parity gate.

The parity gate replays historical events through the online path, each as of its own time,
and compares every feature value and the score with the batch path; on the flights example
it must find no difference, with the embedded store and with Redis.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
import redis
from expect import raises

from mlprod import Project
from mlprod.data.online_store import MemoryOnlineStore
from mlprod.errors import FeatureError
from mlprod.features.ingest import push
from mlprod.features.online import OnlineFeatures
from mlprod.project.serving import OnlineSpec
from mlprod.serve.parity import check_parity


def test_parity_on_2000_flights_with_the_embedded_store(deployed: Project) -> None:
    report = deployed.parity(sample=2000, seed=7)
    assert report.events == 2000
    assert report.store == "sqlite"
    assert report.ok, report.to_dict()["mismatches"]


def test_parity_with_redis(deployed: Project, redis_url: str) -> None:
    """A scratch namespace in the real Redis, filled from the sources and removed after."""
    spec = OnlineSpec(kind="redis", url=redis_url)
    report = check_parity(deployed.deployment(), sample=300, seed=3, online_spec=spec)
    assert report.events == 300
    assert report.store == "redis"
    assert redis.Redis.from_url(redis_url).keys("flights_parity_*") == []
    assert report.ok, report.to_dict()["mismatches"]


def test_parity_finds_a_broken_online_value(deployed: Project) -> None:
    """The gate is not blind: a store missing a source's rows makes features differ."""
    deployment = deployed.deployment()
    store = MemoryOnlineStore()
    report = check_parity(deployment, sample=50, seed=1, store=store)  # nothing materialized
    assert not report.ok
    assert report.counts["origin_temp"] > 0
    example = report.mismatches["origin_temp"][0]
    assert example.online is None and example.batch is not None


def test_push_applies_each_event_once_and_moves_freshness(deployed: Project) -> None:
    """New weather rows pushed online change the as-of features of later requests."""
    deployment = deployed.deployment()
    store = MemoryOnlineStore()
    online = OnlineFeatures(deployment.graph, store, ["origin_temp"])
    plan = online.plan
    con = duckdb.connect(str(deployed.folder / "data" / "nycflights13.duckdb"), read_only=True)
    weather = con.sql("SELECT * FROM weather WHERE time_hour < '2013-03-01'").to_arrow_table()
    con.close()
    first = push(deployment.graph, plan, store, "weather", weather)
    again = push(deployment.graph, plan, store, "weather", weather)
    assert first.applied == weather.num_rows
    assert again.applied == 0
    assert store.freshness()["weather"].latest_at == datetime(2013, 2, 28, 23, 0)
    (values,) = online.compute([{"origin": "JFK"}], [datetime(2013, 2, 28, 14, 0)])
    jfk = weather.filter(pa.compute.equal(weather["origin"], "JFK"))
    at_13 = jfk.filter(
        pa.compute.equal(
            jfk["time_hour"], pa.scalar(datetime(2013, 2, 28, 13, 0), pa.timestamp("us"))
        )
    )
    assert values["origin_temp"] == at_13["temp"][0].as_py()


def test_push_of_an_unknown_or_unused_source(deployed: Project) -> None:
    with raises(FeatureError, "unknown source 'wether' (did you mean 'weather'?)"):
        deployed.push("wether", pa.table({"x": [1]}))
