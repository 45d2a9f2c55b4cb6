"""``RoutedService``: one scoring service over the variants of a routing policy.

Every variant is a registered version with its own ``OnlineService`` (its own features, as
versions may differ in features), all sharing one online store and one prediction log. A
request is validated against the union of the variants' request fields; each record is
assigned on its own (:mod:`.assignment`), the records of each variant are scored together,
and all of them are logged in one transaction, with experiment, variant and assignment,
before the answer returns. A variant that raises is answered for by the control (assignment
"fallback") and its failure recorded in the scoring errors. Shadows are scored after the
answer (:mod:`.shadow`).

Everything a request needs is in one immutable snapshot that the request reads once, so it is
scored wholly by the versions of one policy. ``apply`` loads and warms the models a new policy
needs before it replaces the snapshot (one reference assignment); models no longer referenced
are dropped with the old snapshot, once the requests holding it have finished.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from mlprod.data.online_store import OnlineStore
from mlprod.errors import ConfigError, FeatureError, did_you_mean, one_of
from mlprod.features.requests import RequestField
from mlprod.registry.models import locate
from mlprod.serve.contract import FeedbackItem, Prediction, Readiness, RequestRejected
from mlprod.serve.deployment import Deployment, parse_model_reference
from mlprod.serve.predlog import PredictionLog, PredictionRecord, ScoringError
from mlprod.serve.records import RecordParser
from mlprod.serve.routing.arms import Arm, RoutedPrediction, tag
from mlprod.serve.routing.assignment import FALLBACK, assign_index, cumulative_weights
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.shadow import ShadowJob, ShadowScorer, describe
from mlprod.serve.service import OnlineService, now_utc

_log = logging.getLogger(__name__)


class VariantLoader(Protocol):
    """Finds and loads the versions a policy names."""

    def resolve(self, reference: str) -> str:
        """The ``NAME/VERSION`` a reference stands for now (an alias may have moved)."""
        ...

    def load(self, model: str) -> OnlineService:
        """The service of one ``NAME/VERSION``, on the shared store and log."""
        ...


class RegistryLoader:
    """Loads versions from the project's registry onto one online store and prediction log."""

    def __init__(
        self,
        folder: Path,
        tracking_uri: str,
        store: OnlineStore,
        log: PredictionLog,
        max_records: int = 1000,
    ) -> None:
        self.folder, self.tracking_uri = folder, tracking_uri
        self.store, self.log, self.max_records = store, log, max_records

    def resolve(self, reference: str) -> str:
        parsed = parse_model_reference(reference)
        located = locate(self.tracking_uri, parsed.name, parsed.spec)
        return f"{located.name}/{located.version}"

    def load(self, model: str) -> OnlineService:
        deployment = Deployment.load(self.folder, self.tracking_uri, parse_model_reference(model))
        return OnlineService(deployment, self.store, self.log, self.max_records)


@dataclass(frozen=True)
class _Snapshot:
    """Everything a request reads, fixed for the life of one policy."""

    policy: RoutingPolicy
    served: tuple[Arm, ...]  # in policy order: served[0] is the control
    shadows: tuple[Arm, ...]
    bounds: tuple[float, ...]
    parser: RecordParser
    request_fields: list[RequestField]
    sources: list[str]
    # reuse[k][i]: shadow k may take the feature values of the records served variant i scored
    reuse: tuple[tuple[bool, ...], ...]

    @property
    def control(self) -> Arm:
        return self.served[0]

    def services(self) -> list[OnlineService]:
        """Each loaded service once (two variants may share a version)."""
        found = {id(a.service): a.service for a in (*self.served, *self.shadows)}
        return list(found.values())


class RoutedService:
    """Implements :class:`mlprod.serve.contract.ScoringService` over a routing policy."""

    def __init__(
        self,
        policy: RoutingPolicy,
        loader: VariantLoader,
        store: OnlineStore,
        log: PredictionLog,
        *,
        max_records: int = 1000,
        shadow_queue: int = 1000,
    ) -> None:
        self.loader, self.store, self.log = loader, store, log
        self.max_records = max_records
        self._loaded: dict[str, OnlineService] = {}
        self._apply_lock = threading.Lock()
        self._sample: dict[str, Any] | None = None  # a recent valid record, to warm models
        self._snapshot: _Snapshot
        self.model_name: str
        self.model_version: str
        self.run_id: str
        self.request_fields: list[RequestField]
        self.sources: list[str]
        self._install(self._build(policy))
        self.shadow = ShadowScorer(log, shadow_queue)

    # --- what the server reads -------------------------------------------------------------

    @property
    def policy(self) -> RoutingPolicy:
        return self._snapshot.policy

    def _install(self, snapshot: _Snapshot) -> None:
        """Serve ``snapshot`` from the next request on. The attributes the server shows (the
        control's name and version, the union of request fields) follow it; requests read
        only the snapshot."""
        self._snapshot = snapshot
        control = snapshot.control.service
        self.model_name = control.model_name
        self.model_version = control.model_version
        self.run_id = control.run_id
        self.request_fields = snapshot.request_fields
        self.sources = snapshot.sources

    # --- changing the policy ---------------------------------------------------------------

    def apply(self, policy: RoutingPolicy) -> None:
        """Serve ``policy`` from the next request on: load and warm what it needs first, then
        swap the snapshot at once. On any error the current policy stays."""
        with self._apply_lock:
            snapshot = self._build(policy)
            self._install(snapshot)
            used = {arm.model for arm in (*snapshot.served, *snapshot.shadows)}
            self._loaded = {m: s for m, s in self._loaded.items() if m in used}

    def _build(self, policy: RoutingPolicy) -> _Snapshot:
        resolved = {reference: self.loader.resolve(reference) for reference in policy.models}
        for model in dict.fromkeys(resolved.values()):
            if model not in self._loaded:
                service = self.loader.load(model)
                self._warm(policy, model, service)
                self._loaded[model] = service

        def arms(variants: Sequence[Variant]) -> tuple[Arm, ...]:
            return tuple(
                Arm(v, resolved[v.model], self._loaded[resolved[v.model]]) for v in variants
            )

        served, shadows = arms(policy.variants), arms(policy.shadows)
        fields, categories = _union_fields([a.service for a in served])
        names = [f.name for f in fields]
        if policy.assign_by is not None and policy.assign_by not in names:
            hint = did_you_mean(policy.assign_by, names) or (
                f"; the request fields are {one_of(names, 20)}"
            )
            raise ConfigError(
                f"experiment '{policy.experiment}' assigns by '{policy.assign_by}', which is not "
                f"a request field of its variants{hint}"
            )
        sources = list(dict.fromkeys(s for a in (*served, *shadows) for s in a.service.sources))
        return _Snapshot(
            policy,
            served,
            shadows,
            cumulative_weights(policy),
            RecordParser(fields, categories, self.max_records),
            fields,
            sources,
            tuple(tuple(same_features(s.service, a.service) for a in served) for s in shadows),
        )

    def _warm(self, policy: RoutingPolicy, model: str, service: OnlineService) -> None:
        """Score one record before the model takes traffic, so that its first request does not
        pay for lazy loading. A recent request's record must score (a model that cannot is
        refused); before any request, a made-up record is tried and its failure ignored."""
        needed = {f.name for f in service.request_fields}
        sample = self._sample
        if sample is None or not needed <= sample.keys():
            try:
                service.score([_dummy(service)], [now_utc()])
            except Exception as exc:  # a made-up record may be nonsense to the features
                _log.info("warming %s with a made-up record failed: %s", model, describe(exc))
            return
        try:
            service.score([sample], [now_utc()])
        except Exception as exc:
            raise ConfigError(
                f"model {model} of experiment '{policy.experiment}' failed to score a recent "
                f"request ({describe(exc)}); the routing policy was not changed"
            ) from None

    # --- scoring ---------------------------------------------------------------------------

    def predict(
        self, records: Sequence[Mapping[str, Any]], at: datetime | None = None
    ) -> list[Prediction]:
        snapshot = self._snapshot  # read once: the whole request is scored by this policy
        rows = snapshot.parser.parse(records)
        times = [at or now_utc()] * len(rows)
        self._sample = rows[0]
        policy = snapshot.policy
        groups: dict[int, list[int]] = {}
        reasons: list[str] = []
        for position, row in enumerate(rows):
            index, reason = assign_index(policy, snapshot.bounds, row)
            groups.setdefault(index, []).append(position)
            reasons.append(reason)
        answers: list[Prediction] = [None] * len(rows)  # type: ignore[list-item]
        logged: list[PredictionRecord] = [None] * len(rows)  # type: ignore[list-item]
        scored_by = [0] * len(rows)  # which served variant scored each record
        for index, positions in groups.items():
            part = [rows[p] for p in positions]
            part_times = [times[p] for p in positions]
            arm, used = snapshot.served[index], index
            why: str | list[str] = [reasons[p] for p in positions]
            try:
                predictions, records_ = arm.service.score(part, part_times)
            except RequestRejected:
                raise
            except Exception as exc:
                if index == 0:
                    raise
                self._record_failure(policy.experiment, arm, exc)
                arm, used, why = snapshot.control, 0, FALLBACK
                predictions, records_ = arm.service.score(part, part_times)
            tagged = tag(records_, policy.experiment, arm.name, why)
            for p, prediction, record in zip(positions, predictions, tagged, strict=True):
                answers[p] = RoutedPrediction.of(prediction, policy.experiment, arm.name)
                logged[p] = record
                scored_by[p] = used
        self.log.append(logged)
        if snapshot.shadows:
            reused = [
                [r.features if reuse[i] else None for r, i in zip(logged, scored_by, strict=True)]
                for reuse in snapshot.reuse
            ]
            job = ShadowJob(policy.experiment, snapshot.shadows, rows, times, reused)
            self.shadow.submit(job)
        return answers

    def _record_failure(self, experiment: str, arm: Arm, exc: Exception) -> None:
        service = arm.service
        error = ScoringError(
            experiment, arm.name, service.model_name, service.model_version, describe(exc)
        )
        try:
            self.log.record_error(error)
        except Exception:  # the answer matters more; the log's own trouble shows on append
            _log.exception("recording a scoring failure of variant %s failed", arm.name)

    # --- events, outcomes, health ----------------------------------------------------------

    def push(self, source: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Apply events for every loaded version that reads the source (the store ignores an
        event it has already applied, so versions sharing tables do not count it twice)."""
        snapshot = self._snapshot
        readers = [s for s in snapshot.services() if source in s.sources]
        if not readers:
            raise FeatureError(
                f"no online feature of experiment '{snapshot.policy.experiment}' reads source "
                f"'{source}'{did_you_mean(source, snapshot.sources)}; events are accepted for "
                f"{one_of(snapshot.sources) or 'no source'}"
            )
        return max(service.push(source, records) for service in readers)

    def feedback(self, items: Sequence[FeedbackItem]) -> dict[str, Any]:
        return self._snapshot.control.service.feedback(items)

    def readiness(self) -> Readiness:
        return self._snapshot.control.service.readiness()

    def close(self) -> None:
        """Score and log the queued shadows, then release the store and the log."""
        self.shadow.close()
        self.store.close()
        self.log.close()


def _union_fields(
    services: Sequence[OnlineService],
) -> tuple[list[RequestField], dict[str, Sequence[str]]]:
    """The request fields of every variant (the control's first) and their categories."""
    fields: dict[str, RequestField] = {}
    categories: dict[str, Sequence[str]] = {}
    for service in services:
        config = service.deployment.config
        spine = config.sources[config.spine.source]
        for field in service.request_fields:
            if field.name in fields:
                continue
            fields[field.name] = field
            allowed = spine.columns[field.name].categories
            if allowed is not None:
                categories[field.name] = allowed
    return list(fields.values()), categories


def _dummy(service: OnlineService) -> dict[str, Any]:
    """A made-up record of the right types: the first category where there are categories,
    else 1 (a valid year, month and day) or now."""
    config = service.deployment.config
    spine = config.sources[config.spine.source]
    now = now_utc()
    defaults: dict[str, Any] = {
        "int": 1,
        "float": 1.0,
        "string": "",
        "bool": False,
        "timestamp": now,
        "date": date(now.year, now.month, now.day),
    }
    row: dict[str, Any] = {}
    for field in service.request_fields:
        allowed = spine.columns[field.name].categories
        row[field.name] = sorted(allowed)[0] if allowed else defaults[field.type]
    return row


def open_routed_service(
    policy: RoutingPolicy,
    folder: Path,
    tracking_uri: str,
    store: OnlineStore,
    log: PredictionLog,
    max_records: int = 1000,
) -> RoutedService:
    """A routed service over the project's registry; the store and log are closed with it
    (also when a model of the policy cannot be loaded)."""
    loader = RegistryLoader(folder, tracking_uri, store, log, max_records)
    try:
        return RoutedService(policy, loader, store, log, max_records=max_records)
    except BaseException:
        store.close()
        log.close()
        raise


def same_features(shadow: OnlineService, served: OnlineService) -> bool:
    """Whether ``served``'s feature values are ``shadow``'s too: the same sources and spine,
    and every feature definition of the shadow's project (what its features depend on
    included) the same in the served version's."""
    if shadow is served:
        return True
    mine, theirs = shadow.deployment, served.deployment
    if not set(mine.features) <= set(theirs.features):
        return False
    if (mine.config.sources, mine.config.spine) != (theirs.config.sources, theirs.config.spine):
        return False
    nodes = theirs.graph.nodes
    return all(
        name in nodes and node.feature == nodes[name].feature
        for name, node in mine.graph.nodes.items()
    )
