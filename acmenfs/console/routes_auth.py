"""Console sign-in and sign-out with an API token.

Owns ``/ui/login`` (a form protected by a double-submit CSRF cookie, since no
session exists yet) and ``/ui/logout``. A valid token opens a server-side
session whose opaque id goes into an HttpOnly, SameSite=Strict cookie; the
token itself never reaches JavaScript-readable storage. It must not check
tokens itself: ``ApplianceService.verify_token`` does.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from acmenfs.console.forms import form_fields
from acmenfs.console.sessions import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Session,
    login_csrf_matches,
    new_login_csrf,
)
from acmenfs.console.web import UI, Console, SignInRequired, redirect


def _safe_next(target: str | None) -> str:
    """Only a path inside the console (never another site) after sign-in."""
    if target and target.startswith(UI + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{UI}/dashboard"


def _set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(name, value, path=UI, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _login_page(console: Console, request: Request, status: int = 200, error: str | None = None,
                next_url: str = "") -> Response:
    token = new_login_csrf()
    response = console.render("login.html", None, status, login_csrf=token, error=error, next_url=next_url)
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token)
    return response


def auth_routes(router: APIRouter, console: Console, change_session) -> None:
    @router.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = ""):
        try:
            console.session_for(request)
            return redirect(_safe_next(next))
        except SignInRequired:
            return _login_page(console, request, next_url=next)

    @router.post("/login", include_in_schema=False)
    def login(request: Request, fields: dict[str, str] = Depends(form_fields)):
        next_url = fields.get("next", "")
        if not login_csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), fields.get(CSRF_FIELD)):
            return _login_page(console, request, 403, "The sign-in form expired; please try again.", next_url)
        secret = fields.get("token", "").strip()
        token = console.service.verify_token(secret) if secret else None
        if token is None:
            return _login_page(console, request, 401, "That token is invalid or was revoked.", next_url)
        session = console.sessions.create(secret, token.id, token.name)
        session.flash("ok", f"Signed in with token '{token.name}'.")
        response = redirect(_safe_next(next_url))
        _set_cookie(response, request, SESSION_COOKIE, session.id)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=UI)
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request, session: Session = Depends(change_session)):
        console.sessions.drop(session.id)
        response = redirect(f"{UI}/login")
        response.delete_cookie(SESSION_COOKIE, path=UI)
        return response
