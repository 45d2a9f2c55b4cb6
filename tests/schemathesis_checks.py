"""A schemathesis check for mlprod's one error shape (loaded with SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def mlprod_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is JSON in the one shape: ``{"error": {"status", "message", ...}}``, or on
    the v2 routes the protocol's ``{"error": "..."}``."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    if case.path.startswith("/v2"):
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        return True
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error["status"] == response.status_code, body
    assert isinstance(error["message"], str) and error["message"], body
    assert "Traceback" not in error["message"], body
    return True
