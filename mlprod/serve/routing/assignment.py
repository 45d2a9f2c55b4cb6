"""Which variant a record goes to.

Sticky assignment hashes the entity: ``u`` is the first 8 bytes of
``sha256("{salt}:{assign_by}:{value}")`` read as an unsigned 64-bit integer over ``2**64``,
and the variant whose interval of cumulative normalised weights contains ``u`` gets the
record. A hash (not a random draw remembered somewhere) needs no shared state, so every
replica and every restart agrees, and the salt (the experiment name by default) keeps one
experiment's split independent of another's. Records without the key are drawn at random,
each on its own.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping
from typing import Any

from mlprod.serve.routing.policy import RoutingPolicy

STICKY = "sticky"
RANDOM = "random"
FALLBACK = "fallback"
SHADOW = "shadow"

_SCALE = float(2**64)
_DRAW = random.Random()


def hash_unit(salt: str, assign_by: str, value: Any) -> float:
    """The entity's place in [0, 1): the same for the same salt, field and value, everywhere."""
    digest = hashlib.sha256(f"{salt}:{assign_by}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def cumulative_weights(policy: RoutingPolicy) -> tuple[float, ...]:
    """Upper bounds of each served variant's interval in [0, 1]; the last is exactly 1."""
    total = sum(v.weight for v in policy.variants)
    bounds: list[float] = []
    running = 0.0
    for variant in policy.variants:
        running += variant.weight
        bounds.append(running / total)
    bounds[-1] = 1.0
    return tuple(bounds)


def pick(bounds: tuple[float, ...], u: float) -> int:
    """The index of the interval holding ``u``; a variant of weight 0 is never picked."""
    return min(bisect.bisect_right(bounds, u), len(bounds) - 1)


def assign_index(
    policy: RoutingPolicy,
    bounds: tuple[float, ...],
    record: Mapping[str, Any],
    draw: random.Random | None = None,
) -> tuple[int, str]:
    """The position of the record's variant in ``policy.variants``, and the reason; ``bounds``
    are the policy's ``cumulative_weights`` (computed once per policy, not per record)."""
    key = policy.assign_by
    value = record.get(key) if key is not None else None
    if key is not None and value is not None:
        return pick(bounds, hash_unit(policy.salt_text, key, value)), STICKY
    return pick(bounds, (draw or _DRAW).random()), RANDOM


def assign(policy: RoutingPolicy, record: Mapping[str, Any]) -> tuple[str, str]:
    """``(variant name, reason)`` for one record: "sticky" by the ``assign_by`` field when the
    record has a value for it, else "random"."""
    index, reason = assign_index(policy, cumulative_weights(policy), record)
    return policy.variants[index].name, reason
