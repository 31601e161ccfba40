"""The compliance report over HTTP: the FastAPI app the Airflow plugin mounts in the api-server.

It serves the files `report.build` writes, read-only: the latest report (`index.html`,
`report.json`, `data_docs/`) and the report each DAG run left under `runs/<dag_id>/<run_id>/`.
When a run's report does not exist (yet), the latest is shown with a notice saying so.

Who may read is not decided here: `create_app` takes a `reader` dependency (the plugin passes
Airflow's auth manager) that authenticates the request (401/403) and answers, per DAG, whether the
user may read its runs. The app never serves a file outside the reports folder: every path is
resolved (symlinks included) and checked, and only report file types are served. Every response
carries a Content-Security-Policy that allows nothing but this origin and no script at all.

No Airflow import here: the app runs (and is tested) with any reader.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from governed_marketing.report.paths import run_dir_name

#: The report loads nothing from anywhere but here and runs no script (Data Docs scripts are stripped).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: What the report folder holds that a browser needs; anything else (partial writes, the warehouse
#: if someone pointed GMP_HOME oddly) is never served.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".otf": "font/otf",
}
RUNS = "runs"


class Reader(Protocol):
    """An authenticated user, as the auth dependency returns it."""

    def may_read(self, dag_id: str | None) -> bool:
        """Whether this user may read the runs of `dag_id` (None: of every DAG, as the latest report covers)."""


def create_app(reports_dir: Callable[[], Path], reader: Callable[..., Any]) -> FastAPI:
    """The report app.

    Args:
        reports_dir: returns `$GMP_HOME/reports` (called per request, so the folder may appear later).
        reader: a FastAPI dependency returning a `Reader`; it raises 401/403 for anyone else.
    """
    app = FastAPI(title="Compliance report", docs_url=None, redoc_url=None, openapi_url=None)
    authenticated = Depends(reader)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_model=None)
    def latest(user: Reader = authenticated) -> Response:
        return _serve_latest(user, reports_dir(), "index.html")

    @app.get("/runs/{dag_id}/{run_id}", response_model=None)
    def run_without_slash(dag_id: str, run_id: str, user: Reader = authenticated) -> Response:
        _require(user, dag_id)
        return RedirectResponse(f"{_quote_segment(run_id)}/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)

    @app.get("/runs/{dag_id}/{run_id}/{path:path}", response_model=None)
    def run_report(dag_id: str, run_id: str, path: str, user: Reader = authenticated) -> Response:
        _require(user, dag_id)
        root = reports_dir()
        run_root = _inside(root, RUNS, dag_id, run_dir_name(run_id))
        if run_root.is_dir():
            return _file(run_root, path or "index.html")
        # Not written (yet): the latest report, said so on the page; it covers every DAG.
        _require(user, None)
        response = _serve_latest(user, root, path or "index.html")
        if (path or "index.html") == "index.html" and isinstance(response, FileResponse):
            return HTMLResponse(_with_notice(Path(response.path).read_text(encoding="utf-8"), dag_id, run_id))
        return response

    @app.get("/{path:path}", response_model=None)
    def latest_file(path: str, user: Reader = authenticated) -> Response:
        return _serve_latest(user, reports_dir(), path or "index.html")

    return app


def _require(user: Reader, dag_id: str | None) -> None:
    if not user.may_read(dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: you may not read these DAG runs")


def _serve_latest(user: Reader, root: Path, path: str) -> Response:
    _require(user, None)
    first = Path(path).parts[:1]
    if first == (RUNS,):  # per-run reports go through /runs/<dag_id>/<run_id>/ and its DAG's permission
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    if path in ("", "index.html") and not (root / "index.html").is_file():
        return HTMLResponse(_NO_REPORT, status_code=status.HTTP_404_NOT_FOUND)
    return _file(root, path)


def _inside(root: Path, *parts: str) -> Path:
    """`root/parts`, resolved; 404 for anything that would leave `root` (`..`, absolute parts, symlinks)."""
    base = root.resolve()
    if any(part in ("", ".", "..") or "\x00" in part or Path(part).is_absolute() for part in parts):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    return target


def _file(root: Path, path: str) -> Response:
    parts = [p for p in path.split("/") if p != ""]
    target = _inside(root, *parts) if parts else root.resolve()
    if target.is_dir():
        target = _inside(target, "index.html")
    media_type = MEDIA_TYPES.get(target.suffix.lower())
    if media_type is None or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    return FileResponse(target, media_type=media_type)


def _quote_segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _with_notice(page: str, dag_id: str, run_id: str) -> str:
    notice = (
        '<div role="status" style="background:#fef7e0;border-bottom:2px solid #f9ab00;padding:10px 32px;'
        'font:15px system-ui,sans-serif">'
        f"<strong>No report for run {html.escape(run_id)} of {html.escape(dag_id)} yet</strong>: the run may "
        "still be going, or it ended before its report step. This is the latest report.</div>"
    )
    head, sep, rest = page.partition("<body>")
    return f"{head}{sep}{notice}{rest}" if sep else notice + page


_NO_REPORT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No compliance report yet</title></head>
<body style="font:15px system-ui,sans-serif;margin:32px">
<h1>No compliance report yet</h1>
<p>The report is written at the end of every pipeline DAG run (and by <code>gmp report</code>).
Trigger <code>ingest_crm</code> or run <code>gmp report</code>, then reload.</p>
</body></html>
"""
