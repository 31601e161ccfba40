"""The compliance report in a real browser: headless Chromium opens it offline and finds every section.

Debian's `chromium` package; this test installs nothing and is skipped where the browser is missing
(`.ci/run` installs it, so CI runs it). The screenshot is kept as `test-artifacts/report.png`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from governed_marketing.report.build import SECTIONS

from tests.conftest import PROJECT_ROOT
from tests.e2e.report_runs import SharedRun, successful_run

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARTIFACT = PROJECT_ROOT / "test-artifacts" / "report.png"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)"
    ),
]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def ok(tmp_path_factory, sample_export) -> SharedRun:
    return successful_run(tmp_path_factory, sample_export)


def test_chromium_renders_every_section_of_the_report(ok, tmp_path):
    url = (ok.reports / "index.html").as_uri()
    dom = chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section_id, title in SECTIONS:
        assert re.search(rf'<section id="{section_id}">\s*<h2>{re.escape(title)}</h2>', dom.stdout), title
    assert "<svg" in dom.stdout and "<rect" in dom.stdout


def test_chromium_saves_a_screenshot_of_the_report(ok, tmp_path):
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    shot = chromium(
        tmp_path / "profile-shot",
        f"--screenshot={ARTIFACT}",
        "--window-size=1280,4000",
        (ok.reports / "index.html").as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert ARTIFACT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ARTIFACT.stat().st_size > 20_000
