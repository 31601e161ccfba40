"""Data Docs open offline and make the browser contact no third-party host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from governed_marketing.validation import run_gate
from governed_marketing.validation.docs import build_data_docs

from tests.unit.validation.test_gates import CLASSES, frame, suite

URL_ATTRS = {"src", "href", "srcset", "data", "poster", "action"}
EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts = 0
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in URL_ATTRS and value:
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.styles.append(value)

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def handle_endtag(self, tag):
        self._in_style = False if tag == "style" else self._in_style


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "data_docs"
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    build_data_docs([("run-1", result)], out)
    return out


def pages(site: Path) -> dict[Path, Collector]:
    parsed = {}
    for page in site.rglob("*.html"):
        collector = Collector()
        collector.feed(page.read_text(encoding="utf-8"))
        parsed[page] = collector
    return parsed


def test_no_data_docs_page_loads_or_links_anything_from_another_host(site):
    parsed = pages(site)
    assert len(parsed) >= 3  # index, the validation result, the expectation suite
    for page, collector in parsed.items():
        external = [u for u in collector.urls if EXTERNAL.match(u[2])]
        assert external == [], f"{page.relative_to(site)}: {external}"
        css_urls = [u for text in collector.styles for u in re.findall(r"url\(([^)]*)\)", text)]
        assert not [u for u in css_urls if EXTERNAL.match(u.strip("'\" "))], f"{page}: {css_urls}"
        assert collector.scripts == 0, f"{page.relative_to(site)} still carries scripts (their libraries are gone)"


def test_every_local_reference_of_every_page_exists(site):
    """Offline means every stylesheet, image and page a page points at is in the site."""
    for page, collector in pages(site).items():
        for tag, _, url in collector.urls:
            if url.startswith("#") or url.startswith("mailto:"):
                continue
            target = (page.parent / url.split("#")[0].split("?")[0]).resolve()
            assert target.exists(), f"{page.relative_to(site)}: <{tag}> -> {url}"
        stylesheets = [u for t, _, u in collector.urls if t == "link" and u.endswith("gmp_offline.css")]
        assert stylesheets, f"{page.relative_to(site)} does not link the local stylesheet"


def test_the_index_lists_each_result_without_javascript(site):
    html = (site / "index.html").read_text(encoding="utf-8")
    (link,) = re.findall(r'href="(validations/[^"]+)"', html)
    assert (site / link).is_file()
    assert "test_gate" in html and "failed" in html
