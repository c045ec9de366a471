"""What every console page shares: the ``Console`` state, rendering, sign-in and CSRF checks.

Owns ``Console`` (the service, sessions, jobs, NFS sampler and Jinja environment
of one app), the dependencies ``page_session``/``change_session`` that refuse a
request without a live session (or, for a change, without the session's CSRF
token), and the answers for those refusals. Errors from the service are shown as
the REST API's problem text (``problem_for`` reuses the API's problem body).
It must not implement appliance behaviour: routes call ``ApplianceService``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from acmenfs import __version__
from acmenfs.appliance.api_http import problem_body, problem_response
from acmenfs.appliance.errors import ApplianceError
from acmenfs.console.forms import form_fields
from acmenfs.console.jobs import Job, JobRunner
from acmenfs.console.sampler import StatsSampler
from acmenfs.console.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Session, SessionStore

HERE = Path(__file__).parent
UI = "/ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECTIONS = {"dashboard": "dashboard", "shares": "shares", "share": "shares", "confirm_revert": "shares",
            "confirm_delete": "shares", "tokens": "tokens"}
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No session cookie, an unknown or expired session, or its token was revoked."""


class CsrfRefused(Exception):
    """A change without the session's CSRF token."""


def problem_for(exc: ApplianceError) -> dict[str, Any]:
    """The REST API's problem document for a service error."""
    return problem_body(exc.status, exc.code, exc.detail)


def problem_text(problem: dict[str, Any]) -> str:
    return f"{problem['title']} ({problem['status']} {problem['code']}): {problem['detail']}"


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def size_input(value: int) -> str:
    """An exact size in the form's own syntax: 10G, 512M, 4K or bytes."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def short_time(text: str | None) -> str:
    """RFC 3339 UTC -> 'YYYY-MM-DD HH:MM:SS UTC'."""
    if not text:
        return "-"
    return text[:19].replace("T", " ") + " UTC"


def rule_text(rule) -> str:
    return f"{rule.client}:{rule.access}:{rule.squash}"


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class Console:
    """The console of one app: its service, sessions, jobs, sampler and templates."""

    def __init__(self, service, nfs_stats: Callable[[], dict] | None) -> None:
        self.service = service
        self.sessions = SessionStore()
        self.jobs = JobRunner(problem_for)
        self.sampler = StatsSampler(nfs_stats)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(bytes=human_bytes, size_input=size_input, when=short_time, rule=rule_text, urlquote=quote)
        self.env.globals.update(version=__version__, ui=UI)

    # -- sessions

    def session_for(self, request: Request) -> Session:
        """The request's live session whose token is still valid (a blocking call: SQLite)."""
        self.sampler.ensure_started()
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise SignInRequired()
        if self.service.verify_token(session.token_secret) is None:
            self.sessions.drop(session.id)
            raise SignInRequired()
        return session

    # -- answers

    def render(self, template: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
        page = self.env.get_template(template).render(
            section=SECTIONS.get(template.split(".")[0], ""), session=session, csrf=session.csrf if session else None,
            flashes=session.take_flashes() if session else [], **context,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    def job_answer(self, request: Request, job: Job) -> Response:
        """202 + status JSON for fetch, else a redirect to the job's page."""
        if wants_json(request):
            return JSONResponse({**job.to_dict(), "status_url": f"{UI}/jobs/{job.id}/status",
                                 "page_url": f"{UI}/jobs/{job.id}"}, status_code=202)
        return redirect(f"{UI}/jobs/{job.id}")

    def failed(self, request: Request, session: Session, back_url: str, problem: dict[str, Any]) -> Response:
        """A refused change: the problem JSON for fetch, else back to the page with the problem text."""
        if wants_json(request):
            return JSONResponse(problem, status_code=problem["status"], media_type="application/problem+json")
        session.flash("error", problem_text(problem))
        return redirect(back_url)


def console_dependencies(console: Console):
    """The FastAPI dependencies for pages (a session) and changes (a session + its CSRF token)."""

    def page_session(request: Request) -> Session:
        return console.session_for(request)

    def change_session(request: Request, fields: dict[str, str] = Depends(form_fields)) -> Session:
        session = console.session_for(request)
        if not session.csrf_matches(request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)):
            raise CsrfRefused()
        return session

    return page_session, change_session


async def on_sign_in_required(request: Request, exc: SignInRequired) -> Response:
    """A browser goes to the sign-in page (back to a GET's page after it); scripts get 401."""
    if request.method == "GET" and not wants_json(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"{UI}/login?next={quote(target, safe='')}")
    if "text/html" in request.headers.get("accept", ""):  # a form posted after the session ended
        return redirect(f"{UI}/login")
    return problem_response(401, "unauthorized", "sign in to the console first (the session is missing, "
                            "expired, or its token was revoked)")


async def on_csrf_refused(request: Request, exc: CsrfRefused) -> Response:
    return problem_response(403, "csrf_failed", "the request lacks this session's CSRF token; reload the page")


def wall_clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S")
