"""The dashboard in headless Chromium (Debian's ``chromium``) against a running gateway with
traffic: the page asks the admin API with the admin key and draws the charts from real data.

Set ``VILMO_DASHBOARD_SCREENSHOT=path.png`` to also write the screenshot the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEAM_KEY
from store_gateway import ADMIN, admin, audit_ids, chat, serve_gateway, store_config, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                 "(apt-get install -y chromium; .ci/run installs it)")]


@pytest.fixture(name="busy_gateway")
def busy_gateway_fixture(stub: Any, policy_dir: Path, classifier: Any, tmp_path: Path,
                         ) -> Iterator[tuple[str, list[str]]]:
    """A gateway with traffic from two keys: some replies flagged, some blocked."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_gateway(store_config(stub.url, policy_dir, store), classifier) as base:
        strict = admin("POST", f"{base}/admin/keys",
                       json={"name": "support-bot", "policy": "strict-care-fairness"}).json()
        flagged = []
        for i in range(12):
            stub.reply = ("You could punch him and cheat on the test." if i % 4 == 0
                          else "A calm and kind answer.")
            reply = chat(base, strict["key"] if i % 3 else TEAM_KEY, f"question {i}")
            time.sleep(0.4)  # spread over a few of the page's one-second points
            if i % 4 == 0:
                flagged.append(reply.headers["x-request-id"])
        stub.reset()
        wait_for(lambda: len(audit_ids(base)) == 12)
        yield base, flagged


def run_chromium(url: str, *args: str) -> str:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", "--window-size=1280,1700",
               "--virtual-time-budget=10000", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_the_dashboard_draws_the_admin_apis_figures(busy_gateway: tuple[str, list[str]],
                                                    tmp_path: Path) -> None:
    base, flagged = busy_gateway
    dom = run_chromium(f"{base}/dashboard#key={ADMIN}&window=900&bucket=1", "--dump-dom")
    assert 'data-ready="1"' in dom, dom[-2000:]
    by_value = re.search(r'<svg[^>]*data-chart="by-value".*?</svg>', dom, re.DOTALL)
    assert by_value and len(re.findall(r'class="point"', by_value.group(0))) >= 2 * 3
    assert "<polyline" in by_value.group(0)  # several points in time: lines
    assert 'data-series="mft.care"' in by_value.group(0)
    assert re.search(r'<svg[^>]*data-chart="by-policy"', dom)
    assert re.search(r'<polygon[^>]*class="observed"', dom)  # the Value Compass radar
    assert "alignment Σ w·S = 0." in dom
    assert len(re.findall(r'class="bar"', dom)) >= 3  # violation rates and actions
    table = re.search(r'<table id="flagged-table">.*?</table>', dom, re.DOTALL)
    assert table and all(request_id in table.group(0) for request_id in flagged)
    usage = re.search(r'<table id="key-usage">.*?</table>', dom, re.DOTALL)
    assert usage and "support-bot" in usage.group(0) and "team-a" in usage.group(0)
    assert ADMIN not in dom  # the key never lands in the page's markup
    screenshot = Path(os.environ.get("VILMO_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    run_chromium(f"{base}/dashboard#key={ADMIN}&window=900&bucket=1", f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_dashboard_without_the_admin_key_shows_the_error_and_no_data(
        busy_gateway: tuple[str, list[str]]) -> None:
    base, flagged = busy_gateway
    page = httpx.get(f"{base}/dashboard")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]
    assert flagged[0] not in page.text
    dom = run_chromium(f"{base}/dashboard#key={TEAM_KEY}", "--dump-dom")
    assert 'data-ready="error"' in dom and "admin API needs the admin key" in dom
    assert flagged[0] not in dom
