"""The dashboard in a real browser: served at ``/dashboard`` by uvicorn on loopback and opened
in Debian's headless Chromium through Playwright. The page must load with no console error,
no page error and no request outside the server, and show every chart with its size. The
full-page screenshot is kept in the test's folder and in tests/artifacts/dashboard.png (the
README's picture is a copy of it).

Chromium and Playwright are required, not optional: `apt-get install -y chromium` and
`.venv/bin/pip install playwright` (never `playwright install`, which downloads a browser).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from live_server import start_server
from test_dashboard import shared_daily

from mlprod.errors import PredictionLogError
from mlprod.monitor.dashboard import DashboardData, render
from mlprod.monitor.dashboard_route import install_dashboard_route

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INSTALL = (
    "install it with `apt-get install -y chromium` (run `apt-get update` first if apt cannot "
    "find it) and `.venv/bin/pip install playwright`; never `playwright install`"
)
STRAY = "https://example.invalid/pixel.png"
CHARTS = 9  # volume, latency, scores, two drift heatmaps, AUC, estimate, value, readout


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: {INSTALL}", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is missing: {INSTALL}", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


class Provider:
    """What the route's provider answers: the data, or an error to raise."""

    def __init__(self, answer: DashboardData | Exception) -> None:
        self.answer = answer

    def __call__(self) -> DashboardData:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture(scope="module")
def served(
    flights_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Provider, DashboardData]]:
    data = shared_daily(flights_db, tmp_path_factory)
    provider = Provider(data)
    app = FastAPI()
    install_dashboard_route(app, provider, project="flights")

    @app.get("/stray")
    def stray() -> HTMLResponse:
        """The page with a reference outside it, as a template mistake would add one."""
        page = render(data).replace("</body>", f'<img alt="" src="{STRAY}"></body>')
        return HTMLResponse(page)

    server, thread, url = start_server(app)
    try:
        yield url, provider, data
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Visit:
    """A page opened on the dashboard, with what went wrong while it loaded."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.response = self.page.goto(url, wait_until="load")

    def close(self) -> None:
        self.page.close()


def test_the_dashboard_loads_cleanly_and_shows_every_chart(
    browser: Any, served: tuple[str, Provider, DashboardData], tmp_path: Path
) -> None:
    url, _, data = served
    visit = Visit(browser, f"{url}/dashboard")
    try:
        assert visit.response.status == 200
        assert visit.response.headers["content-type"].startswith("text/html")
        charts = visit.page.locator("figure.chart svg")
        assert charts.count() == CHARTS
        for index in range(CHARTS):
            chart = charts.nth(index)
            assert chart.is_visible()
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100, box
        for table in ("#drift-table", "#alerts-table", "#readout-table"):
            assert visit.page.locator(table).is_visible(), table
        assert visit.page.locator("#alerts-table tbody tr").count() == len(data.firing)
        visit.page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "dashboard.png", ARTIFACTS / "dashboard.png")
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 50_000
        assert visit.errors == []
        assert all(r.startswith((url + "/", "data:")) for r in visit.requests), visit.requests
    finally:
        visit.close()


def test_a_reference_outside_the_page_is_refused_and_reported(
    browser: Any, served: tuple[str, Provider, DashboardData]
) -> None:
    """The page's Content-Security-Policy blocks the request, and the block is a console
    error: the check above would catch a template that starts calling out."""
    url, _, _ = served
    visit = Visit(browser, f"{url}/stray")
    try:
        assert any("Content Security Policy" in error and STRAY in error for error in visit.errors)
        assert f"request failed: {STRAY}" in visit.errors  # blocked before it left
    finally:
        visit.close()


def test_no_predictions_yet_is_said_plainly(
    browser: Any, served: tuple[str, Provider, DashboardData]
) -> None:
    url, provider, data = served
    provider.answer = DashboardData("flights", datetime(2013, 1, 1), metrics=[])
    visit = Visit(browser, f"{url}/dashboard")
    try:
        assert visit.response.status == 200
        assert visit.page.locator("#no-data").is_visible()
        assert "No predictions yet" in visit.page.inner_text("#no-data")
        assert visit.page.locator("svg").count() == 0
        assert visit.errors == []
    finally:
        visit.close()
        provider.answer = data


def test_data_that_cannot_be_gathered_is_a_503_page_saying_why(
    served: tuple[str, Provider, DashboardData],
) -> None:
    url, provider, data = served
    provider.answer = PredictionLogError("the prediction log <mlprod.db> cannot be opened")
    try:
        response = httpx.get(f"{url}/dashboard", timeout=60)
    finally:
        provider.answer = data
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert (
        "The dashboard cannot be shown: the prediction log &lt;mlprod.db&gt; cannot be opened"
        in (response.text)
    )


def test_favicon_and_headers(served: tuple[str, Provider, DashboardData]) -> None:
    url, _, _ = served
    icon = httpx.get(f"{url}/favicon.ico", timeout=60)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG\r\n\x1a\n")
    page = httpx.get(f"{url}/dashboard", timeout=60)
    assert page.headers["cache-control"] == "no-store"
    schema = httpx.get(f"{url}/openapi.json", timeout=60).json()
    assert "/dashboard" not in schema["paths"] and "/favicon.ico" not in schema["paths"]
