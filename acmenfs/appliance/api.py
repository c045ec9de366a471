"""The appliance REST API (docs/rest-api.md) as a FastAPI application.

Owns ``create_app(service, ...)``: the ``/v1`` routes, ``/metrics``,
``/openapi.json`` and ``/docs``, and the assembly of the middleware and error
handlers of ``api_http`` (problem-JSON answers, Bearer authentication) around
the request/response models of ``api_models``. Each endpoint translates one request into one ``ApplianceService``
call and its answer into JSON; it must not touch the store, the files or the
export table itself. Endpoints are plain ``def`` functions, which FastAPI runs
in its thread pool, so a long service call (a copy-fallback clone) never stalls
the event loop that also carries NFS traffic.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from acmenfs import __version__
from acmenfs.appliance.api_http import (
    BearerAuthMiddleware,
    MetricsAuth,
    BodySizeLimitMiddleware,
    CrashToProblemMiddleware,
    JsonBodyMiddleware,
    HttpMetricsMiddleware,
    _on_appliance_error,
    _on_http_error,
    _on_validation_error,
)
from acmenfs.appliance.api_models import (
    CLIENT_PATTERN,
    PROBLEM_RESPONSES,
    SHARE_LINKS,
    SNAPSHOT_LINKS,
    TOKEN_LINKS,
    AccessRuleIn,
    PoolOut,
    ShareCreate,
    ShareExtend,
    ShareListOut,
    ShareOut,
    ShareRevert,
    SnapshotClone,
    SnapshotCreate,
    SnapshotListOut,
    SnapshotOut,
    TokenCreate,
    TokenCreatedOut,
    TokenListOut,
    VersionOut,
    VolumePut,
    _rules,
    created_links,
)
from acmenfs.appliance.errors import ApplianceError
from acmenfs.appliance.metrics import HttpRequestStats, build_registry, render_metrics

API_VERSION = 1
MAX_BODY_BYTES = 1 << 20  # the largest real request (a share with many access rules) is a few KiB


# --------------------------------------------------------------------------- routes


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


def _no_content() -> Response:
    return Response(status_code=204)


def _operation_id(route) -> str:
    """operationId = the route function's name (the links in api_models name them)."""
    return route.name


def _share_routes(router: APIRouter, service) -> None:
    def share_json(share, status: int = 200) -> JSONResponse:
        return _json(share.to_dict(service.nfs), status)

    @router.post("/shares", status_code=201, response_model=ShareOut, tags=["shares"],
                 summary="Create a share (and its volume file)", responses=created_links(SHARE_LINKS))
    def create_share(body: ShareCreate):
        volume = body.volume.model_dump() if body.volume else None
        share = service.create_share(body.name, body.size, volume=volume, access=_rules(body.access))
        return share_json(share, 201)

    @router.get("/shares", response_model=ShareListOut, tags=["shares"], summary="List shares")
    def list_shares(name: str | None = None, export_path: str | None = None):
        shares = service.list_shares(name=name, export_path=export_path)
        return _json({"shares": [share.to_dict(service.nfs) for share in shares]})

    @router.get("/shares/{share_id}", response_model=ShareOut, tags=["shares"],
                summary="Show a share")
    def get_share(share_id: str):
        return share_json(service.get_share(share_id))

    @router.delete("/shares/{share_id}", status_code=204, tags=["shares"],
                   summary="Delete a share (cascade=true also deletes its snapshots)")
    def delete_share(share_id: str, cascade: Annotated[bool, Query()] = False):
        service.delete_share(share_id, cascade=cascade)
        return _no_content()

    @router.post("/shares/{share_id}/extend", response_model=ShareOut, tags=["shares"],
                 summary="Grow a share and its volume file")
    def extend_share(share_id: str, body: ShareExtend):
        return share_json(service.extend_share(share_id, body.size))

    @router.put("/shares/{share_id}/volume", response_model=ShareOut, tags=["shares"],
                summary="Create, rename or grow the share's volume file")
    def put_volume(share_id: str, body: VolumePut):
        share = service.put_volume(
            share_id, body.name, size=body.size, sparse=body.sparse, mode=body.mode, uid=body.uid, gid=body.gid
        )
        return share_json(share)

    @router.post("/shares/{share_id}/access", response_model=ShareOut, tags=["access"],
                 summary="Add or replace the access rule for a client")
    def add_access(share_id: str, body: AccessRuleIn):
        return share_json(service.add_access(share_id, body.to_rule()))

    @router.delete("/shares/{share_id}/access", response_model=ShareOut, tags=["access"],
                   summary="Remove a client's access rule (idempotent)")
    def remove_access(share_id: str, client: Annotated[str, Query(min_length=1, max_length=64,
                                                                  pattern=CLIENT_PATTERN)]):
        return share_json(service.remove_access(share_id, client))

    @router.post("/shares/{share_id}/revert", response_model=ShareOut, tags=["shares"],
                 summary="Bring a share's contents back to a snapshot")
    def revert_share(share_id: str, body: ShareRevert):
        return share_json(service.revert_share(share_id, body.snapshot_id))


def _snapshot_routes(router: APIRouter, service) -> None:
    @router.post("/shares/{share_id}/snapshots", status_code=201, response_model=SnapshotOut,
                 tags=["snapshots"], summary="Snapshot a share", responses=created_links(SNAPSHOT_LINKS))
    def create_snapshot(share_id: str, body: SnapshotCreate):
        return _json(service.create_snapshot(share_id, body.name).to_dict(), 201)

    @router.get("/shares/{share_id}/snapshots", response_model=SnapshotListOut,
                tags=["snapshots"], summary="List a share's snapshots")
    def list_snapshots(share_id: str):
        snapshots = service.list_snapshots(share_id)
        return _json({"snapshots": [snapshot.to_dict() for snapshot in snapshots]})

    @router.get("/snapshots/{snapshot_id}", response_model=SnapshotOut, tags=["snapshots"],
                summary="Show a snapshot")
    def get_snapshot(snapshot_id: str):
        return _json(service.get_snapshot(snapshot_id).to_dict())

    @router.delete("/snapshots/{snapshot_id}", status_code=204, tags=["snapshots"],
                   summary="Delete a snapshot")
    def delete_snapshot(snapshot_id: str):
        service.delete_snapshot(snapshot_id)
        return _no_content()

    @router.post("/snapshots/{snapshot_id}/clone", status_code=201, response_model=ShareOut,
                 tags=["snapshots"], summary="Make a new share from a snapshot",
                 responses=created_links(SHARE_LINKS))
    def clone_snapshot(snapshot_id: str, body: SnapshotClone):
        share = service.clone_snapshot(
            snapshot_id, body.name, size=body.size, volume_name=body.volume_name,
            access=_rules(body.access), volume_uid=body.volume_uid, volume_gid=body.volume_gid,
        )
        return _json(share.to_dict(service.nfs), 201)


def _admin_routes(router: APIRouter, service) -> None:
    @router.get("/pool", response_model=PoolOut, tags=["pool"], summary="Pool capacity and counts")
    def pool():
        return _json(service.pool_stats().to_dict(service.nfs))

    @router.get("/tokens", response_model=TokenListOut, tags=["tokens"], summary="List tokens")
    def list_tokens():
        return _json({"tokens": [token.to_dict() for token in service.list_tokens()]})

    @router.post("/tokens", status_code=201, response_model=TokenCreatedOut, tags=["tokens"],
                 responses=created_links(TOKEN_LINKS),
                 summary="Create a token (its secret is shown only in this answer)")
    def create_token(body: TokenCreate):
        token, secret = service.create_token(body.name)
        return _json({"id": token.id, "name": token.name, "token": secret}, 201)

    @router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"],
                   summary="Revoke a token")
    def revoke_token(token_id: str):
        service.revoke_token(token_id)
        return _no_content()


# --------------------------------------------------------------------------- the app


NFS_PROGRAM = 100003


def served_nfs_versions(nfs_server: Any) -> list[str]:
    """The NFS versions ``nfs_server`` answers on its port, for ``GET /v1/version``.

    None (``--no-nfs``) serves none. An in-process ``NfsServer`` is asked which
    versions of program 100003 its dispatchers registered; a worker
    ``Supervisor`` runs that same server in each worker. Version 4 means every
    minor version COMPOUND accepts (``acmenfs.nfs4.const.MINOR_VERSIONS``).
    """
    if nfs_server is None:
        return []
    majors = {program.version for rpc_server in getattr(nfs_server, "rpc_servers", [])
              for program in rpc_server.dispatcher.programs() if program.number == NFS_PROGRAM}
    if not majors:  # a Supervisor: the listeners hand connections to NfsServer workers
        majors = {3, 4}
    versions = [str(major) for major in sorted(majors) if major != 4]
    if 4 in majors:
        from acmenfs.nfs4.const import MINOR_VERSIONS

        versions += [f"4.{minor}" for minor in MINOR_VERSIONS]
    return versions


def create_app(
    service, *, nfs_stats: Callable[[], dict] | None = None, metrics_auth: MetricsAuth = MetricsAuth(),
    nfs_versions: list[str] | tuple[str, ...] = (),
) -> FastAPI:
    """The REST application for ``service``.

    ``nfs_stats`` returns the NFS server's live counters (``NfsServer.stats``)
    for /metrics; without it the NFS metric families are empty.
    ``nfs_versions`` (``served_nfs_versions``) is what ``GET /v1/version`` says
    the NFS server serves; empty without one.
    ``metrics_auth`` says who may read /metrics (default: anyone).
    """
    app = FastAPI(
        title="acmenfs appliance API",
        version=__version__,
        description="Shares, snapshots, clones and access lists of an acmenfs appliance. "
        "Every /v1 path except /v1/version needs 'Authorization: Bearer <token>'.",
        openapi_url="/openapi.json",
        generate_unique_id_function=_operation_id,
        docs_url=None,  # /docs is served offline by acmenfs.console (install_console below)
        redoc_url=None,
    )
    http_stats = HttpRequestStats()
    registry = build_registry(service, http_stats, nfs_stats)
    app.state.service = service
    app.state.metrics_registry = registry

    app.add_exception_handler(ApplianceError, _on_appliance_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(BearerAuthMiddleware, verify_token=service.verify_token)
    app.add_middleware(CrashToProblemMiddleware)
    app.add_middleware(HttpMetricsMiddleware, stats=http_stats)

    @app.get("/v1/version", response_model=VersionOut, tags=["meta"], summary="API version")
    def version():
        return _json({"api_version": API_VERSION, "version": __version__, "nfs_versions": list(nfs_versions)})

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def metrics(request: Request):
        refusal = metrics_auth.refusal(request.scope, service.verify_token)
        if refusal is not None:
            return refusal
        body, content_type = render_metrics(registry)
        return Response(body, media_type=content_type)

    bearer = HTTPBearer(auto_error=False, description="a token from `acmenfs token create` "
                        "or <data-dir>/admin.token")
    router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=PROBLEM_RESPONSES,
                       generate_unique_id_function=_operation_id)
    _share_routes(router, service)
    _snapshot_routes(router, service)
    _admin_routes(router, service)
    app.include_router(router)
    from acmenfs.console import install_console  # /ui and the offline /docs (imports this module)

    install_console(app, service, nfs_stats=nfs_stats)
    return app
