"""Make a built Data Docs site open offline and load nothing from a third-party host.

GX's page templates pull Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs and its
logo from S3: offline the pages are unstyled, and a reviewer's browser tells those hosts who reads
which report. None of these assets ships in an installed package we depend on, so after the build
every page is rewritten: external stylesheets, scripts and images go (a logo that GX copies into
`static/images/` is pointed at that copy), links to outside pages lose their target, and one local
stylesheet (`static/styles/gmp_offline.css`) styles the Bootstrap classes the pages use. The index,
whose tables GX fills from JavaScript, is replaced by a static one.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

STYLESHEET = Path("static/styles/gmp_offline.css")
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""", re.IGNORECASE)
_URL_ATTRS = ("href", "src", "srcset", "poster", "data", "action", "formaction", "background")


@dataclass(frozen=True)
class IndexEntry:
    """One validation result on the static index page."""

    gate: str
    subject: str
    suite: str
    run_name: str
    run_time: str
    success: bool
    evaluated: int
    failed: int
    page: str  # relative to the site root
    suite_page: str | None


def is_external(url: str | None) -> bool:
    """Whether a URL would make the browser contact another host (absolute or protocol-relative)."""
    return bool(url) and bool(_EXTERNAL.match(url))


def make_offline(site: Path, entries: list[IndexEntry]) -> None:
    """Rewrite every HTML page of the site in place, add the local stylesheet and the static index."""
    site = Path(site)
    (site / STYLESHEET).parent.mkdir(parents=True, exist_ok=True)
    (site / STYLESHEET).write_text(_OFFLINE_CSS, encoding="utf-8")
    (site / "index.html").write_text(_index_html(entries), encoding="utf-8")
    for page in site.rglob("*.html"):
        page.write_text(_rewrite(page.read_text(encoding="utf-8"), page, site), encoding="utf-8")


def _relative(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _local_image(url: str, page: Path, site: Path) -> str | None:
    """The local copy of an external image GX also ships in `static/images/`, if there is one."""
    name = Path(urlsplit(url.strip()).path).name
    local = site / "static" / "images" / name
    return _relative(local, page) if name and local.is_file() else None


def _dangling(url: str, page: Path) -> bool:
    """A relative reference to a file that is not there."""
    if is_external(url) or url.startswith(("#", "data:", "mailto:")):
        return False
    return not (page.parent / urlsplit(url).path).exists()


def _css(text: str, page: Path, site: Path) -> str:
    """Point external `url(...)` references in CSS at a local copy, or drop them."""

    def replace(match: re.Match) -> str:
        url = match.group(2)
        if not is_external(url):
            return match.group(0)
        local = _local_image(url, page, site)
        return f"url('{local}')" if local else "none"

    text = _CSS_URL.sub(replace, text)
    return re.sub(r"@import\s+(?:url\()?\s*['\"]?\s*(?:[a-z]+:)?//[^;]*;", "", text, flags=re.IGNORECASE)


class _Rewriter(HTMLParser):
    """Re-emits a page token by token, minus scripts and external assets."""

    def __init__(self, page: Path, site: Path) -> None:
        super().__init__(convert_charrefs=False)
        self.page, self.site = page, site
        self.out: list[str] = []
        self.in_script = False
        self.in_style = False

    def _emit_tag(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        if tag == "script":
            self.in_script = not closed
            return
        values = dict(attrs)
        if tag == "link" and is_external(values.get("href")):
            return  # CDN stylesheets: gmp_offline.css stands in for them
        kept: list[tuple[str, str | None]] = []
        for name, value in attrs:
            if name.startswith("on") or name in ("integrity", "crossorigin"):
                continue  # event handlers call scripts that are gone; SRI belongs to removed CDN tags
            if name == "style" and value:
                value = _css(value, self.page, self.site)
            if tag in ("link", "img", "source") and name in ("href", "src") and value and _dangling(value, self.page):
                value = _local_image(value, self.page, self.site)  # GX points some pages' favicon one level off
                if value is None:
                    return
            if name in _URL_ATTRS and is_external(value):
                local = _local_image(value or "", self.page, self.site) if tag in ("img", "source", "link") else None
                if local is None:
                    if tag in ("img", "source", "iframe", "embed", "object", "video", "audio"):
                        return  # nothing local to show instead
                    continue  # a link to an outside page stays as text
                value = local
            if tag == "a" and name in ("target", "rel") and is_external(values.get("href")):
                continue
            kept.append((name, value))
        rendered = "".join(f" {n}" if v is None else f' {n}="{html.escape(v, quote=True)}"' for n, v in kept)
        self.out.append(f"<{tag}{rendered}{' /' if closed else ''}>")
        if tag == "style":
            self.in_style = not closed

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._emit_tag(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._emit_tag(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False
            return
        if tag == "style":
            self.in_style = False
        if tag == "head":  # last in the head: it wins over GX's inline defaults
            self.out.append(f'<link rel="stylesheet" href="{_relative(self.site / STYLESHEET, self.page)}">\n')
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.in_script:
            return
        self.out.append(_css(data, self.page, self.site) if self.in_style else data)

    def handle_entityref(self, name: str) -> None:
        if not self.in_script:
            self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        if not self.in_script:
            self.out.append(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        if not self.in_script:
            self.out.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.out.append(f"<?{data}>")


def _rewrite(text: str, page: Path, site: Path) -> str:
    rewriter = _Rewriter(page, site)
    rewriter.feed(text)
    rewriter.close()
    return "".join(rewriter.out)


def _index_html(entries: list[IndexEntry]) -> str:
    esc = html.escape
    rows = []
    for e in sorted(entries, key=lambda e: (e.gate, e.subject, e.run_time)):
        status = '<span class="badge pass">passed</span>' if e.success else '<span class="badge fail">failed</span>'
        suite = f'<a href="{esc(e.suite_page)}">{esc(e.suite)}</a>' if e.suite_page else esc(e.suite)
        rows.append(
            f"<tr><td>{status}</td><td>{esc(e.gate)}</td><td>{esc(e.subject)}</td><td>{suite}</td>"
            f"<td>{esc(e.run_name)}</td><td>{esc(e.run_time)}</td>"
            f'<td class="num">{e.evaluated}</td><td class="num">{e.failed}</td>'
            f'<td><a href="{esc(e.page)}">validation result</a></td></tr>'
        )
    body = "\n".join(rows) or '<tr><td colspan="9">No gate has run yet.</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data Docs - validation results</title>
</head>
<body class="gmp-index">
<main class="container-fluid">
<h1>Data Docs</h1>
<p class="muted">Great Expectations results of the gates of the latest run: rules and counts, never a value
about a person. Every page opens offline.</p>
<table class="table table-sm">
<thead><tr><th>Status</th><th>Gate</th><th>Subject</th><th>Expectation suite</th><th>Run</th><th>Validated at</th>
<th class="num">Expectations</th><th class="num">Failed</th><th>Page</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
</main>
</body>
</html>
"""


# The Bootstrap 4 classes GX's templates use, and nothing else: layout, tables, cards, badges, nav.
_OFFLINE_CSS = """/* Local stand-in for the CDN stylesheets of GX Data Docs (written by governed_marketing). */
*, *::before, *::after { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #202124; margin: 0;
       background: #f8f9fa; }
a { color: #1a4f8b; text-decoration: none; } a:hover { text-decoration: underline; }
a:not([href]) { color: inherit; text-decoration: none; }
h1, h2, h3, h4, h5, h6 { margin: .5rem 0; line-height: 1.25; } h1 { font-size: 1.6rem; } h2 { font-size: 1.35rem; }
h3 { font-size: 1.15rem; } h4, h5, h6, .h6 { font-size: 1rem; }
.container-fluid { width: 100%; padding: 1rem 2rem; }
.row { display: flex; flex-wrap: wrap; margin: 0; }
[class*="col-"] { position: relative; width: 100%; min-width: 0; padding: 0 .5rem; }
.col-12 { flex: 0 0 100%; max-width: 100%; } .col-6 { flex: 0 0 50%; max-width: 50%; }
@media (min-width: 768px) {
  .col-md-2 { flex: 0 0 16.667%; max-width: 16.667%; } .col-md-10 { flex: 0 0 83.333%; max-width: 83.333%; }
  .d-md-block { display: block !important; } .d-md-inline-flex { display: inline-flex !important; }
}
@media (min-width: 992px) {
  .col-lg-2 { flex: 0 0 16.667%; max-width: 16.667%; } .col-lg-10 { flex: 0 0 83.333%; max-width: 83.333%; }
}
.d-none { display: none; } .d-flex { display: flex; } .align-items-center { align-items: center; }
.justify-content-center { justify-content: center; } .mr-auto { margin-right: auto; }
.float-left { float: left; } .h-100 { height: 100%; }
/* Without scripts: no toggles, the collapsed details shown, no vendor newsletter footer. */
.invisible, #ge-cta-footer, .btn-group-toggle, a[data-toggle="collapse"], .modal, .ge-walkthrough-modal,
body > footer { display: none; }
.tab-content > .tab-pane { display: none; } .tab-content > .active { display: block; }
.m-0 { margin: 0; } .m-1 { margin: .25rem; } .m-2 { margin: .5rem; } .mb-0 { margin-bottom: 0; }
.mb-1 { margin-bottom: .25rem; } .mb-2 { margin-bottom: .5rem; } .mb-3 { margin-bottom: 1rem; }
.mb-4 { margin-bottom: 1.5rem; } .mt-1 { margin-top: .25rem; } .mt-3 { margin-top: 1rem; }
.p-0 { padding: 0; } .p-1 { padding: .25rem; } .p-2 { padding: .5rem; } .p-3 { padding: 1rem; }
.navbar { display: flex; align-items: center; flex-wrap: wrap; padding: .5rem 1rem; background: #fff;
          border-bottom: 1px solid #dadce0; }
.navbar-brand img { height: 36px; width: auto; }
.sticky-top { position: sticky; top: 0; z-index: 10; }
.nav { display: flex; flex-wrap: wrap; list-style: none; padding: 0; margin: 0; }
.nav-pills { flex-direction: column; } .nav-link { display: block; padding: .3rem .5rem; }
.nav-tabs { border-bottom: 1px solid #dadce0; } .nav-tabs .nav-link.active { border-bottom: 2px solid #1a4f8b; }
.bg-light { background: #f1f3f4; } .rounded { border-radius: 6px; } .border-bottom { border-bottom: 1px solid #dadce0; }
.breadcrumb { display: flex; flex-wrap: wrap; list-style: none; padding: .25rem .5rem; margin: 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding: 0 .4rem; color: #5f6368; }
.card { background: #fff; border: 1px solid #dadce0; border-radius: 8px; margin-bottom: 1rem; overflow: hidden; }
.card-header { background: #f1f3f4; border-bottom: 1px solid #dadce0; padding: .5rem .75rem; }
.card-body { padding: .75rem; }
.table, table { width: 100%; border-collapse: collapse; margin: .25rem 0 .75rem; background: #fff; }
.table th, .table td, table th, table td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #dadce0;
                                           vertical-align: top; }
thead th { background: #f1f3f4; font-weight: 600; } td.num, th.num { text-align: right; }
.table-responsive { overflow-x: auto; } .table-bordered td, .table-bordered th { border: 1px solid #dadce0; }
.show-scrollbars { overflow: auto; max-height: 20rem; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: #5f6368; }
.badge.pass { background: #1f7a3d; } .badge.fail { background: #b3261e; }
.alert { padding: .75rem 1rem; border: 1px solid #dadce0; border-radius: 6px; background: #fff; }
.btn { display: inline-block; padding: .3rem .7rem; border-radius: 4px; border: 1px solid #1a4f8b; }
.text-success { color: #1f7a3d; } .text-danger { color: #b3261e; } .muted, .text-muted { color: #5f6368; }
.lead { font-size: 1.1rem; } code, pre { background: #f1f3f4; padding: 0 4px; border-radius: 3px; }
pre { padding: .5rem; white-space: pre-wrap; }
.fas { font-style: normal; font-weight: 700; }
.fa-check-circle::before { content: "\\2714"; } .fa-times::before { content: "\\2718"; }
.fa-question-circle::before { content: "?"; }
"""
