"""The routing store: policy revisions, rollout state and the admin audit trail, kept in the
prediction log's database (the same SQLite file, or the same PostgreSQL schema).

Every server polls :meth:`RoutingStore.latest_revision` (one indexed ``max()``) and applies the
latest policy when it changed, so all workers and replicas serve the same policy, and a server
that restarts resumes it. Three tables:

- ``mlprod_routing_policies``: one row per revision (who set it, when, the policy as JSON);
- ``mlprod_rollouts``: one row per rollout; ``version`` is bumped by every change, and a change
  is a compare-and-set on it, so two servers judging the same step never both move it;
- ``mlprod_admin_audit``: who did what, when. Never a token, nor anything derived from one.

Writes take the database's write lock (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL advisory
transaction lock), so revision numbers never repeat. Values are always passed as parameters;
table names are constants (quoted as identifiers with the configured PostgreSQL schema).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, LiteralString

from mlprod.errors import RolloutError
from mlprod.project.serving import LogSpec
from mlprod.serve.routing._state_db import Database, PostgresDatabase, Run, SqliteDatabase
from mlprod.serve.routing.policy import RoutingPolicy

RUNNING, ROLLED_BACK, ABORTED, COMPLETED, HALTED = (
    "running",
    "rolled_back",
    "aborted",
    "completed",
    "halted",
)
STATUSES = (RUNNING, ROLLED_BACK, ABORTED, COMPLETED, HALTED)

_ROLLOUT_COLUMNS: LiteralString = (
    "rollout_id, experiment, challenger, control, base, steps, every_s, guardrails, step, "
    "status, reason, measures, started_at, step_started_at, updated_at, version"
)
_NEWEST: LiteralString = "SELECT max(revision) FROM {policies}"
_LATEST_POLICY: LiteralString = (
    "SELECT revision, policy FROM {policies} ORDER BY revision DESC LIMIT 1"
)
_REVISIONS: LiteralString = "SELECT revision, created_at, policy FROM {policies} ORDER BY revision"
_PUBLISH: LiteralString = """INSERT INTO {policies} (revision, created_at, actor, policy)
SELECT coalesce(max(revision), 0) + 1, %s, %s, %s FROM {policies} RETURNING revision"""
_LATEST_ROLLOUT: LiteralString = (
    "SELECT " + _ROLLOUT_COLUMNS + " FROM {rollouts} ORDER BY rollout_id DESC LIMIT 1"
)
_INSERT_ROLLOUT: LiteralString = """INSERT INTO {rollouts} (experiment, challenger, control, base,
    steps, every_s, guardrails, step, status, reason, measures, started_at, step_started_at,
    updated_at, version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1) RETURNING rollout_id"""
_UPDATE_ROLLOUT: LiteralString = """UPDATE {rollouts} SET step = %s, status = %s, reason = %s,
    measures = %s, step_started_at = %s, updated_at = %s, version = version + 1
WHERE rollout_id = %s AND version = %s RETURNING version"""
_AUDIT: LiteralString = (
    "INSERT INTO {audit} (at, actor, peer, action, detail) VALUES (%s, %s, %s, %s, %s)"
)
_AUDIT_TRAIL: LiteralString = """SELECT audit_id, at, actor, peer, action, detail FROM {audit}
ORDER BY audit_id DESC LIMIT %s"""


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RolloutState:
    """One rollout: the challenger's traffic moves through ``steps`` (percent), one step per
    ``every_s`` seconds at least, while its guardrails hold."""

    rollout_id: int
    experiment: str
    challenger: str  # a pinned model reference, NAME/VERSION
    control: str  # the pinned reference of the control it is compared with
    base: dict[str, Any]  # the policy (JSON) the rollout started from
    steps: tuple[int, ...]
    every_s: float
    guardrails: dict[str, Any]
    step: int  # index into steps
    status: str
    reason: str | None
    measures: dict[str, Any]  # what the guardrails measured at the latest judgement
    started_at: datetime
    step_started_at: datetime
    updated_at: datetime
    version: int = 1

    @property
    def percent(self) -> int:
        """The challenger's share of traffic now (0 once rolled back or aborted)."""
        if self.status in (ROLLED_BACK, ABORTED):
            return 0
        return self.steps[self.step]

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "experiment": self.experiment,
            "challenger": self.challenger,
            "control": self.control,
            "steps": list(self.steps),
            "every_s": self.every_s,
            "guardrails": self.guardrails,
            "step": self.step,
            "percent": self.percent,
            "status": self.status,
            "reason": self.reason,
            "measures": self.measures,
            "started_at": self.started_at.isoformat(),
            "step_started_at": self.step_started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    at: datetime
    actor: str
    peer: str | None
    action: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "peer": self.peer,
            "action": self.action,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Action:
    """An audit row to write with a change: who, from where, what."""

    actor: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    peer: str | None = None


class RoutingStore:
    """Policy revisions, rollouts and the audit trail of one prediction log's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    def sqlite(cls, path: Path) -> RoutingStore:
        return cls(SqliteDatabase(Path(path)))

    @classmethod
    def postgres(cls, url: str, schema: str = "public") -> RoutingStore:
        return cls(PostgresDatabase(url, schema))

    @classmethod
    def for_log(cls, spec: LogSpec, project_dir: Path) -> RoutingStore:
        """The store in the database of the log ``spec`` configures."""
        if spec.kind == "postgres":
            if not spec.url:
                raise RolloutError("log.kind is 'postgres' but log.url is missing")
            return cls.postgres(spec.url, spec.schema_)
        return cls.sqlite(Path(project_dir) / spec.path)

    @property
    def where(self) -> str:
        return self._db.where

    # --- policies -----------------------------------------------------------------------

    def latest_revision(self) -> int:
        """The newest policy revision (0 when none was ever stored): the servers' poll."""
        rows = self._db.read(_NEWEST)
        return int(rows[0][0] or 0)

    def policy(self) -> RoutingPolicy | None:
        """The newest policy, with its revision (None when none was ever stored)."""
        rows = self._db.read(_LATEST_POLICY)
        if not rows:
            return None
        revision, text = rows[0]
        return RoutingPolicy.from_json(json.loads(text)).with_revision(int(revision))

    def revisions(self) -> list[tuple[datetime, RoutingPolicy]]:
        """Every stored policy with when it was set (naive UTC), oldest first: the periods
        in which the weights held, for the experiment readout."""
        return [
            (_time(at), RoutingPolicy.from_json(json.loads(text)).with_revision(int(revision)))
            for revision, at, text in self._db.read(_REVISIONS)
        ]

    def publish(
        self, policy: RoutingPolicy, action: Action, *, expect_revision: int | None = None
    ) -> RoutingPolicy | None:
        """Store ``policy`` as the next revision and audit it; returns it with its revision.
        With ``expect_revision``, only if that is still the newest (else None: someone else
        changed the policy first)."""
        with self._db.write() as run:
            if expect_revision is not None:
                newest = int(run(_NEWEST, ())[0][0] or 0)
                if newest != expect_revision:
                    return None
            published = _publish(run, policy, action.actor)
            _audit(run, action)
        return published

    # --- rollouts -----------------------------------------------------------------------

    def rollout(self) -> RolloutState | None:
        """The latest rollout (running or finished), None when there never was one."""
        rows = self._db.read(_LATEST_ROLLOUT)
        return _rollout(rows[0]) if rows else None

    def start_rollout(
        self, state: RolloutState, policy: RoutingPolicy, action: Action
    ) -> RolloutState:
        """Record a new rollout with its first step's policy, unless one is running."""
        with self._db.write() as run:
            latest = run(_LATEST_ROLLOUT, ())
            if latest and latest[0][9] == RUNNING:
                running = _rollout(latest[0])
                raise RolloutError(
                    f"a rollout of {running.challenger} is running (at {running.percent}%); "
                    "abort it first with 'mlprod rollout abort'"
                )
            rollout_id = run(
                _INSERT_ROLLOUT,
                (
                    state.experiment,
                    state.challenger,
                    state.control,
                    json.dumps(state.base),
                    json.dumps(list(state.steps)),
                    state.every_s,
                    json.dumps(state.guardrails),
                    *_step_columns(state),
                    state.started_at,
                    state.step_started_at,
                    state.updated_at,
                ),
            )[0][0]
            _publish(run, policy, action.actor)
            _audit(run, action)
        return replace(state, rollout_id=int(rollout_id), version=1)

    def transition(
        self,
        current: RolloutState,
        new: RolloutState,
        policy: RoutingPolicy | None,
        action: Action,
    ) -> RolloutState | None:
        """Move a rollout from ``current`` to ``new`` (and publish ``policy`` with it), only if
        nobody changed it since ``current`` was read; None when someone did."""
        with self._db.write() as run:
            moved = run(
                _UPDATE_ROLLOUT,
                (
                    *_step_columns(new),
                    new.step_started_at,
                    new.updated_at,
                    current.rollout_id,
                    current.version,
                ),
            )
            if not moved:
                return None
            if policy is not None:
                _publish(run, policy, action.actor)
            _audit(run, action)
        return replace(new, version=int(moved[0][0]))

    # --- audit --------------------------------------------------------------------------

    def audit(self, action: Action) -> None:
        """Record an admin action that changes nothing stored here (a reload, a refusal)."""
        with self._db.write() as run:
            _audit(run, action)

    def audit_trail(self, limit: int = 100) -> list[AuditEntry]:
        """The latest ``limit`` audit rows, newest first."""
        rows = self._db.read(_AUDIT_TRAIL, (limit,))
        return [
            AuditEntry(int(i), _time(at), actor, peer, act, json.loads(detail))
            for i, at, actor, peer, act, detail in rows
        ]

    def close(self) -> None:
        self._db.close()


def _publish(run: Run, policy: RoutingPolicy, actor: str) -> RoutingPolicy:
    stored = {k: v for k, v in policy.to_json().items() if k != "revision"}
    revision = run(_PUBLISH, (now_utc(), actor, json.dumps(stored, sort_keys=True)))[0][0]
    return policy.with_revision(int(revision))


def _audit(run: Run, action: Action) -> None:
    detail = json.dumps(dict(action.detail), sort_keys=True, default=str)
    run(_AUDIT, (now_utc(), action.actor, action.peer, action.action, detail))


def _step_columns(state: RolloutState) -> tuple[int, str, str | None, str]:
    """What judging a step changes, in the order of the rollouts table's columns."""
    return state.step, state.status, state.reason, json.dumps(state.measures)


def _rollout(row: Sequence[Any]) -> RolloutState:
    (rid, experiment, challenger, control, base, steps, every_s, guardrails, step, status) = row[
        :10
    ]
    reason, measures, started, step_started, updated, version = row[10:]
    return RolloutState(
        rollout_id=int(rid),
        experiment=experiment,
        challenger=challenger,
        control=control,
        base=json.loads(base),
        steps=tuple(int(s) for s in json.loads(steps)),
        every_s=float(every_s),
        guardrails=json.loads(guardrails),
        step=int(step),
        status=status,
        reason=reason,
        measures=json.loads(measures),
        started_at=_time(started),
        step_started_at=_time(step_started),
        updated_at=_time(updated),
        version=int(version),
    )


def _time(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
