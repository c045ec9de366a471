"""The appliance's web console at ``/ui`` and its offline ``/docs``.

``install_console(app, service, nfs_stats=...)`` adds to the REST app: the
console's pages and actions (server-rendered Jinja2 over the same
``ApplianceService`` the API uses), its static files at ``/ui/static``, the
handlers that send an unsigned-in browser to the sign-in page, and Swagger UI
served from local files at ``/docs``. Modules: sessions (sign-in, CSRF), web
(shared page machinery), routes_* (pages), jobs (long operations), sampler
(NFS rates), lineage (clone trees), forms (input parsing), docs (Swagger UI).
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from acmenfs.console.docs import install_offline_docs
from acmenfs.console.routes_admin import dashboard_routes, job_status_routes, not_found_route, token_routes
from acmenfs.console.routes_auth import auth_routes
from acmenfs.console.routes_shares import confirm_routes, job_routes, share_list_routes, share_page_routes
from acmenfs.console.web import (
    HERE,
    UI,
    Console,
    CsrfRefused,
    SignInRequired,
    console_dependencies,
    on_csrf_refused,
    on_sign_in_required,
)

__all__ = ["install_console"]


def install_console(app: FastAPI, service, *, nfs_stats: Callable[[], dict] | None = None) -> Console:
    """Add ``/ui`` and the offline ``/docs`` to ``app``; returns the console's state."""
    console = Console(service, nfs_stats)
    page_session, change_session = console_dependencies(console)
    router = APIRouter(prefix=UI)
    auth_routes(router, console, change_session)
    dashboard_routes(router, console, page_session)
    share_list_routes(router, console, page_session, change_session)
    share_page_routes(router, console, page_session, change_session)
    confirm_routes(router, console, page_session)
    job_routes(router, console, change_session)
    token_routes(router, console, page_session, change_session)
    job_status_routes(router, console, page_session)
    not_found_route(router, console, page_session)  # last: it matches every other GET under /ui
    app.mount(f"{UI}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(CsrfRefused, on_csrf_refused)
    install_offline_docs(app)
    app.state.console = console
    return console
