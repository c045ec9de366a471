"""Console dashboard, tokens and job status pages.

Owns ``/ui/dashboard`` (pool capacity and counts, plus a live section the page
refreshes: NFS rates from the sampler, the duplicate request cache, workers up),
``/ui/tokens`` (list, create with the secret shown once, revoke: revoking a
token also ends the console sessions signed in with it) and ``/ui/jobs/{id}``
(a job's page and its JSON status). It must not compute NFS rates itself
(sampler.py does) nor run long work on a request (jobs.py does).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from acmenfs.appliance.errors import ApplianceError
from acmenfs.console.forms import form_fields, text_field
from acmenfs.console.sessions import Session
from acmenfs.console.web import UI, Console, problem_for, redirect, wall_clock

SPARK_WIDTH, SPARK_HEIGHT = 300, 48


def sparkline(values: list[float]) -> str:
    """SVG polyline points for ``values`` scaled into the sparkline box ('' if too few)."""
    if len(values) < 2:
        return ""
    top = max(values) or 1.0
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{SPARK_HEIGHT - 2 - v / top * (SPARK_HEIGHT - 4):.1f}"
                    for i, v in enumerate(values))


def capacity(pool) -> dict:
    total = pool.total_bytes or 1
    return {
        "used_pct": pool.used_bytes * 100 / total,
        "provisioned_pct": pool.provisioned_bytes * 100 / total,
        "oversubscription": pool.provisioned_bytes / total,
    }


def live_context(console: Console) -> dict:
    stats = console.sampler.summary()
    if stats.get("enabled"):
        series = stats["series"]
        calls = [p["calls_per_s"] for p in series]
        rates = [p["read_bps"] + p["write_bps"] for p in series]
        stats["spark_calls"], stats["spark_bytes"] = sparkline(calls), sparkline(rates)
        stats["peak_calls"], stats["peak_bytes"] = max(calls, default=0.0), max(rates, default=0.0)
        stats["now"] = series[-1] if series else None
        stats["since"] = wall_clock(series[0]["wall"]) if series else None
    return {"live": stats, "spark_w": SPARK_WIDTH, "spark_h": SPARK_HEIGHT}


def dashboard_routes(router: APIRouter, console: Console, page_session) -> None:
    service = console.service

    @router.get("/", include_in_schema=False)
    def home():
        return redirect(f"{UI}/dashboard")

    @router.get("/dashboard", include_in_schema=False)
    def dashboard(session: Session = Depends(page_session)):
        pool = service.pool_stats()
        return console.render("dashboard.html", session, pool=pool, cap=capacity(pool), nfs=service.nfs,
                              **live_context(console))

    @router.get("/dashboard/live", include_in_schema=False)
    def dashboard_live(session: Session = Depends(page_session)):
        return console.render("_live.html", None, **live_context(console))  # keeps the flashes


def token_routes(router: APIRouter, console: Console, page_session, change_session) -> None:
    service = console.service

    def render(session: Session, status: int = 200, created: dict | None = None):
        return console.render("tokens.html", session, status, tokens=service.list_tokens(), created=created)

    @router.get("/tokens", include_in_schema=False)
    def tokens(session: Session = Depends(page_session)):
        return render(session)

    @router.post("/tokens", include_in_schema=False)
    def create_token(request: Request, session: Session = Depends(change_session),
                     fields: dict[str, str] = Depends(form_fields)):
        try:
            token, secret = service.create_token(text_field(fields, "name"))
        except ApplianceError as exc:
            return console.failed(request, session, f"{UI}/tokens", problem_for(exc))
        # Shown once, in this answer only (not via a redirect that would need to keep it).
        return render(session, 201, created={"name": token.name, "secret": secret})

    @router.post("/tokens/{token_id}/revoke", include_in_schema=False)
    def revoke_token(request: Request, token_id: str, session: Session = Depends(change_session)):
        try:
            service.revoke_token(token_id)
        except ApplianceError as exc:
            return console.failed(request, session, f"{UI}/tokens", problem_for(exc))
        console.sessions.drop_token(token_id)
        if token_id == session.token_id:
            return redirect(f"{UI}/login")
        session.flash("ok", "Token revoked; sessions signed in with it have ended.")
        return redirect(f"{UI}/tokens")


def not_found_route(router: APIRouter, console: Console, page_session) -> None:
    """Any other /ui page: a 404 page for people (register it last)."""

    @router.get("/{path:path}", include_in_schema=False)
    def not_found(path: str, session: Session = Depends(page_session)):
        problem = problem_for(ApplianceError(f"no console page /ui/{path}", "not_found"))
        problem.update(status=404, title="Not Found")
        return console.render("error.html", session, 404, problem=problem)


def job_status_routes(router: APIRouter, console: Console, page_session) -> None:
    def find(job_id: str, session: Session):
        job = console.jobs.get(job_id, session.token_id)
        if job is None:
            problem = problem_for(ApplianceError(f"no job {job_id}", "not_found"))
            problem.update(status=404, title="Not Found")
            return None, problem
        return job, None

    @router.get("/jobs/{job_id}", include_in_schema=False)
    def job_page(job_id: str, session: Session = Depends(page_session)):
        job, problem = find(job_id, session)
        if job is None:
            return console.render("error.html", session, 404, problem=problem)
        return console.render("job.html", session, job=job.to_dict(), running=job.state == "running")

    @router.get("/jobs/{job_id}/status", include_in_schema=False)
    def job_status(job_id: str, session: Session = Depends(page_session)):
        job, problem = find(job_id, session)
        if job is None:
            return JSONResponse(problem, status_code=404, media_type="application/problem+json")
        return JSONResponse(job.to_dict(), headers={"Cache-Control": "no-store"})
