"""``GET /dashboard``: the monitoring dashboard of the served project, and ``/favicon.ico``.

Gathering the data (reading the log, running the monitor) and drawing the charts take a
second or two of CPU, so both run in the thread pool: scoring requests keep being answered
meanwhile. When the data cannot be gathered (an :class:`MlprodError`: the log unreachable,
no reference statistics), the answer is a 503 page that says why; a bug stays a 500 through
the server's error handlers. Neither route is in the OpenAPI document, which describes the
scoring API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from mlprod.errors import MlprodError
from mlprod.monitor.dashboard import DashboardData, icon_png, render, render_error

logger = logging.getLogger("mlprod.serve")
NO_STORE = {"Cache-Control": "no-store"}  # the page is of this moment


def install_dashboard_route(
    app: FastAPI, provider: Callable[[], DashboardData], project: str = "this project"
) -> None:
    """Add ``GET /dashboard`` (the page of ``provider()``'s data) and ``GET /favicon.ico``."""

    def page() -> str:
        return render(provider())

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        try:
            text = await run_in_threadpool(page)
        except MlprodError as error:
            logger.warning("the dashboard cannot be shown: %s", error)
            return HTMLResponse(render_error(project, str(error)), 503, headers=NO_STORE)
        return HTMLResponse(text, headers=NO_STORE)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(
            icon_png(), media_type="image/png", headers={"Cache-Control": "max-age=86400"}
        )
