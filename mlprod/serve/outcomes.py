"""Join outcomes back to logged predictions, from the sources, once they are known.

A logged prediction carries its spine keys. Its outcome is the spine's own ``label`` of the
source row with those keys, known from the row's ``label_available_at`` on: the same
definition that labels the training matrix. Predictions whose outcome is known get it as
feedback (source ``outcomes``); the others wait for a later run. Feedback is idempotent, so
running this again changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.sources import connect, open_source
from mlprod.data.types import ARROW_TYPES
from mlprod.errors import FeatureError
from mlprod.features.events import timestamp_literal
from mlprod.features.graph import FeatureGraph
from mlprod.serve.predlog import Feedback, PredictionLog

_LOGGED = "__logged"


@dataclass(frozen=True)
class OutcomeSummary:
    unlabelled: int  # logged predictions without a label before this run
    labelled: int  # labels found and stored now
    pending: int  # outcomes not known yet (or no source row with those keys)

    def to_dict(self) -> dict[str, int]:
        return {"unlabelled": self.unlabelled, "labelled": self.labelled, "pending": self.pending}


def compute_outcomes(
    folder: Path, graph: FeatureGraph, log: PredictionLog, now: datetime | None = None
) -> OutcomeSummary:
    """Label every unlabelled logged prediction whose outcome is known before ``now``."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    config = graph.config
    spine = config.spine
    if not graph.timed or graph.numbered:
        missing = "spine.label_available_at" if not graph.timed else "spine.keys"
        raise FeatureError(
            f"outcomes find each logged prediction's row by its keys and take its label once "
            f"known, but {missing} is not declared in mlprod.yaml"
        )
    logged = log.predictions()
    waiting = logged.filter(pa.compute.is_null(logged.column("label")))
    if waiting.num_rows == 0:
        return OutcomeSummary(0, 0, 0)
    contracts = config.sources[spine.source].columns
    keys = [json.loads(text) for text in waiting.column("keys").to_pylist()]
    table = pa.table(
        {
            "__id": waiting.column("prediction_id"),
            **{
                k: pa.array([row.get(k) for row in keys], type=ARROW_TYPES[contracts[k].type])
                for k in spine.keys
            },
        }
    )
    label_at = sql.timestamp(graph.spine_exprs["label_available_at"].copy())
    source_rows = exp.select(
        *[sql.col(k) for k in spine.keys],
        sql.alias(graph.spine_exprs["label"].copy(), "__label"),
        sql.alias(label_at, "__label_at"),
    ).from_(sql.table(spine.source))
    joined = (
        exp.select(
            sql.col("__id", _LOGGED), sql.col("__label", "__src"), sql.col("__label_at", "__src")
        )
        .from_(sql.table(_LOGGED))
        .join(
            sql.subquery(source_rows, "__src"),
            on=sql.and_all(
                [
                    exp.EQ(this=sql.col(k, _LOGGED), expression=sql.col(k, "__src"))
                    for k in spine.keys
                ]
            ),
        )
        .where(
            sql.and_all(
                [
                    exp.not_(exp.Is(this=sql.col("__label", "__src"), expression=exp.null())),
                    exp.LT(this=sql.col("__label_at", "__src"), expression=timestamp_literal(now)),
                ]
            )
        )
    )
    con = connect(config.engine)
    try:
        open_source(con, folder, config, spine.source)
        con.register(_LOGGED, table)
        found = con.sql(joined.sql("duckdb", identify=True)).fetchall()
    finally:
        con.close()
    feedback = [
        Feedback(label=bool(label), prediction_id=str(pid), observed_at=at, source="outcomes")
        for pid, label, at in found
    ]
    if feedback:
        log.add_feedback(feedback)
    return OutcomeSummary(waiting.num_rows, len(feedback), waiting.num_rows - len(feedback))
