"""Serving several model versions at once: A/B experiments with sticky assignment, shadow
scoring after the response, and swapping the policy in a running server.

- :mod:`.policy`: ``RoutingPolicy`` and ``Variant``, the live policy as one immutable value.
- :mod:`.assignment`: which variant a request gets (a salted hash of an entity key, or random).
- :mod:`.router`: ``RoutedService``, a scoring service over the variants of a policy.
- :mod:`.shadow`: scores shadow variants after the response, on one background thread.
"""

from __future__ import annotations

from mlprod.serve.routing.policy import RoutingPolicy, Variant

__all__ = ["RoutingPolicy", "Variant"]
