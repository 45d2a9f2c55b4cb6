"""``mlprod init``: a working, commented ``mlprod.yaml`` for a table, inferred from its data.

The contract comes from the data (types, nulls, the categories of short text columns), the
features are every usable column (one ``kind: columns`` line), and the split fits the table:
out of time when a time column is named, a stratified random split otherwise. The label is
checked on the data before anything is written (true/false or 0/1, both classes present), and
the file is loaded back as ``mlprod run`` would load it; a project that would not run is
never left behind.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.inspect_table import ColumnFacts, TableFacts, inspect_table, table_file
from mlprod.errors import ConfigError, MlprodError, did_you_mean
from mlprod.features.expressions import parse_expression
from mlprod.project.base import IDENTIFIER
from mlprod.project.loading import CONFIG_FILE

_TABLE = "__init_table"


@dataclass(frozen=True)
class InitSummary:
    """What ``mlprod init`` tells the user."""

    path: Path
    rows: int
    columns: int
    features: int
    positives: int
    negatives: int
    null_labels: int
    split: str
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is no feature

    @property
    def positive_rate(self) -> float:
        return self.positives / max(self.positives + self.negatives, 1)


def init_project(
    folder: Path,
    given: str,
    label: str,
    *,
    time: str | None = None,
    key: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> InitSummary:
    """Write ``folder/mlprod.yaml`` for the table ``given`` (a path relative to the current
    directory, or ``FILE.duckdb:TABLE``) and the label expression ``label``."""
    target = folder / CONFIG_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to replace it")
    data_path = table_file(given)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        facts = inspect_table(con, given, _TABLE)
        for column in facts.columns:
            if not re.match(IDENTIFIER, column.name):
                raise ConfigError(
                    f"mlprod init: column '{column.name}' of '{given}' is not a name mlprod can "
                    "use (letters, digits and underscores, not starting with a digit); rename "
                    "it in the data"
                )
        time_column = _check_time(facts, time)
        _check_key(con, facts, key)
        counts = _check_label(con, facts, label)
        split = _split(con, time_column)
    left_out = _left_out(facts, key)
    relative = os.path.relpath(data_path.resolve(), folder.resolve())
    location = dict(facts.location) | {"path": relative}
    project = name or _identifier(folder.resolve().name, "project")
    source = _identifier(data_path.stem, "rows")
    text = _render(project, source, location, facts, label, time, key, split, left_out, counts)
    features = _write_checked(folder, target, text)
    return InitSummary(
        target,
        facts.rows,
        len(facts.columns),
        features,
        *counts,
        "out of time" if time else "random",
        left_out,
    )


def _identifier(text: str, fallback: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    return cleaned if re.match(IDENTIFIER, cleaned) else fallback


def _known(facts: TableFacts, name: str, option: str) -> ColumnFacts:
    column = facts.column(name)
    if column is None:
        names = [c.name for c in facts.columns]
        hint = did_you_mean(name, names)
        raise ConfigError(f"mlprod init: {option} '{name}': no such column{hint}")
    return column


def _check_time(facts: TableFacts, time: str | None) -> ColumnFacts | None:
    if time is None:
        return None
    column = _known(facts, time, "--time")
    if column.type not in ("timestamp", "date"):
        raise ConfigError(
            f"mlprod init: --time '{time}' holds {column.type} values, not times; name a "
            "timestamp or date column, or leave --time out for a random split"
        )
    if column.nulls:
        raise ConfigError(f"mlprod init: --time '{time}' is empty on {column.nulls:,} rows")
    return column


def _check_key(con: duckdb.DuckDBPyConnection, facts: TableFacts, key: str | None) -> None:
    if key is None:
        return
    column = _known(facts, key, "--key")
    if column.nulls:
        raise ConfigError(f"mlprod init: --key '{key}' is empty on {column.nulls:,} rows")
    if column.distinct < facts.rows:
        ref = sql.col(key)
        twice = (
            exp.select(ref)
            .from_(sql.table(_TABLE))
            .group_by(ref)
            .having(exp.Count(this=exp.Star()) > 1)
            .order_by(ref)
            .limit(1)
        )
        example = con.execute(twice.sql("duckdb")).fetchall()[0][0]
        raise ConfigError(
            f"mlprod init: --key '{key}' is not unique: {facts.rows - column.distinct:,} rows "
            f"repeat a value (e.g. {example!r}); a key names one row"
        )


def _check_label(
    con: duckdb.DuckDBPyConnection, facts: TableFacts, label: str
) -> tuple[int, int, int]:
    """(positives, negatives, nulls) of the label on the data; raises unless it is 0/1."""
    tree = parse_expression(label, "--label")
    names = [c.name for c in facts.columns]
    for column in tree.find_all(exp.Column):
        if column.name not in names:
            raise ConfigError(
                f"mlprod init: --label reads '{column.name}', which '{facts.location['path']}' "
                f"does not have{did_you_mean(column.name, names)}"
            )
    value = exp.alias_(tree.copy(), "label", quoted=True)
    query = exp.select(value).distinct().from_(sql.table(_TABLE)).limit(4)
    try:
        seen = {row[0] for row in con.execute(query.sql("duckdb")).fetchall()}
    except duckdb.Error as exc:
        raise ConfigError(f"mlprod init: --label '{label}': {str(exc).splitlines()[0]}") from None
    # 0 == False and 1 == True: this takes booleans and the integers 0 and 1.
    if not seen - {None} <= {True, False} or any(isinstance(v, float) for v in seen):
        shown = ", ".join(repr(v) for v in sorted(seen - {None}, key=str)[:3])
        hint = _label_hint(facts, tree)
        raise ConfigError(
            f"mlprod init: --label '{label}' gives values such as {shown}, not true/false or "
            f"0/1{hint}"
        )
    count = exp.Count(this=exp.Star())
    as_int = exp.cast(tree.copy(), exp.DataType.Type.INT)
    is_true = exp.EQ(this=as_int, expression=exp.Literal.number(1))
    totals = exp.select(
        exp.Filter(this=count.copy(), expression=exp.Where(this=is_true)),
        exp.Filter(this=count.copy(), expression=exp.Where(this=exp.Not(this=is_true.copy()))),
        exp.Filter(
            this=count.copy(),
            expression=exp.Where(this=exp.Is(this=tree.copy(), expression=exp.Null())),
        ),
    ).from_(sql.table(_TABLE))
    positives, negatives, nulls = con.execute(totals.sql("duckdb")).fetchall()[0]
    if positives == 0 or negatives == 0:
        only = "true" if negatives == 0 else "false"
        raise ConfigError(
            f"mlprod init: --label '{label}' is {only} on every row with a value; a model "
            "needs both outcomes"
        )
    return positives, negatives, nulls


def _label_hint(facts: TableFacts, tree: exp.Expr) -> str:
    if isinstance(tree, exp.Column):
        column = facts.column(tree.name)
        if column is not None and column.categories:
            return f"; compare it, e.g. --label \"{tree.name} = '{column.categories[-1]}'\""
    return "; write a comparison, e.g. --label \"churned = 'Yes'\""


def _split(con: duckdb.DuckDBPyConnection, time: ColumnFacts | None) -> dict[str, Any]:
    if time is None:
        return {"method": "random", "valid_fraction": 0.2, "test_fraction": 0.2}
    ref = exp.cast(sql.col(time.name), exp.DataType.Type.TIMESTAMP)
    query = exp.select(
        *[
            exp.Anonymous(this="quantile_disc", expressions=[ref.copy(), exp.Literal.number(q)])
            for q in (0.6, 0.8)
        ]
    ).from_(sql.table(_TABLE))
    train_end, valid_end = con.execute(query.sql("duckdb")).fetchall()[0]
    if not train_end < valid_end:
        raise ConfigError(
            f"mlprod init: --time '{time.name}' has too few distinct times for an out-of-time "
            "split; leave --time out for a random split"
        )
    return {"method": "out_of_time", "train_end": train_end, "valid_end": valid_end}


def _left_out(facts: TableFacts, key: str | None) -> dict[str, str]:
    """Columns that would make poor features: a different value on every row (an id)."""
    why: dict[str, str] = {}
    for column in facts.columns:
        if column.name == key or column.type not in ("int", "string"):
            continue
        if column.nulls == 0 and column.distinct == facts.rows and facts.rows > MIN_ROWS_FOR_ID:
            why[column.name] = "a different value on every row (an id?)"
    return why


MIN_ROWS_FOR_ID = 20


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _contract(column: ColumnFacts, rows: int) -> str:
    contract: dict[str, Any] = {"type": column.type}
    if column.nulls == 0:
        contract["nullable"] = False
    if column.categories is not None:
        contract["categories"] = column.categories
    note = f"  # {column.nulls / rows:.1%} empty" if column.nulls else ""
    return f"      {_scalar(column.name)}: {_scalar(contract)}{note}"


def _render(
    project: str,
    source: str,
    location: dict[str, Any],
    facts: TableFacts,
    label: str,
    time: str | None,
    key: str | None,
    split: dict[str, Any],
    left_out: dict[str, str],
    counts: tuple[int, int, int],
) -> str:
    positives, negatives, nulls = counts
    rate = positives / (positives + negatives)
    lines = [
        f"# Written by `mlprod init` from {location['path']} ({facts.rows:,} rows, "
        f"{len(facts.columns)} columns). Edit freely;",
        "# `mlprod config check --project .` checks it, `mlprod run --project .` trains.",
        f"name: {_scalar(project)}",
        "",
        "sources:",
        f"  {source}:",
        f"    from: {_scalar(location)}",
        "    # The contract each run checks the data against: types, whether a column may be",
        "    # empty, and the values a short text column may take (a new value stops the run).",
        "    columns:",
        *[_contract(c, facts.rows) for c in facts.columns],
        "",
        "# One row of the table is one prediction.",
        "spine:",
        f"  source: {source}",
    ]
    if key is not None:
        lines.append(f"  keys: [{_scalar(key)}]")
    else:
        lines.append("  # No key column: rows are numbered (row_number) in the file's order.")
    if time is not None:
        lines += [
            "  # When each prediction is made; features only see what was known before it.",
            f"  time: {_scalar(time)}",
            "  # When the outcome becomes known. Set it to the real delay (e.g.",
            f"  # {time} + INTERVAL 30 DAY) before adding features that aggregate past rows.",
            f"  label_available_at: {_scalar(time)}",
        ]
    lines += [
        f"  # {positives:,} true ({rate:.1%}), {negatives:,} false"
        + (f", {nulls:,} empty (left out)" if nulls else ""),
        f"  label: {_scalar(label)}",
        "",
        "# Every column is a plain feature (text columns are categorical), except the key, the",
        "# time, the columns the label reads" + (", and those listed below." if left_out else "."),
        "features:",
    ]
    entry: dict[str, Any] = {"kind": "columns", "columns": "all"}
    if left_out:
        entry["except"] = list(left_out)
        lines += [f"  # left out: {name}: {why}" for name, why in left_out.items()]
    lines += [f"  - {_scalar(entry)}", "", "train:"]
    if split["method"] == "random":
        lines.append("  # No time column: a stratified random split, 60/20/20 train/valid/test.")
    else:
        lines += [
            "  # Out of time: train on the first 60% of the time range, validate on the next",
            "  # 20%, test once on the rest. Add a `gap:` if outcomes take time to land.",
        ]
    lines += [
        f"  split: {_scalar(split)}",
        "  models:",
        "    - kind: lightgbm",
        "      params: {learning_rate: 0.05, n_estimators: 500}",
        "      search:",
        "        num_leaves: {low: 7, high: 127, log: true, integer: true}",
        "        min_child_samples: {low: 5, high: 200, log: true, integer: true}",
        "    - kind: logistic",
        "  tuning: {trials: 5, seed: 0}",
        "  # What a decision is worth, to choose the threshold and report business value:",
        "  # value: {tp: 100, fp: -10, fn: 0, tn: 0}",
        "",
    ]
    return "\n".join(lines)


def _write_checked(folder: Path, target: Path, text: str) -> int:
    """Write the file, then load it as `mlprod run` would (undone if that fails); returns the
    number of features."""
    from mlprod.api import Project

    folder.mkdir(parents=True, exist_ok=True)
    previous = target.read_text() if target.exists() else None
    target.write_text(text)
    try:
        project = Project.load(folder)
        project.check()
        return len(project.config.feature_definitions)
    except MlprodError as exc:
        if previous is None:
            target.unlink()
        else:
            target.write_text(previous)
        raise ConfigError(
            f"mlprod init wrote a project that does not load ({exc}); please report this"
        ) from None
