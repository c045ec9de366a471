"""The appliance REST API (docs/rest-api.md) as a FastAPI application.

Owns ``create_app(service, ...)``: request models with strict validation, the
``/v1`` routes, Bearer-token authentication, problem-JSON error answers (RFC
9457) for every refused or failed request, ``/metrics``, ``/openapi.json`` and
``/docs``. Each endpoint translates one request into one ``ApplianceService``
call and its answer into JSON; it must not touch the store, the files or the
export table itself. Endpoints are plain ``def`` functions, which FastAPI runs
in its thread pool, so a long service call (a copy-fallback clone) never stalls
the event loop that also carries NFS traffic.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Annotated, Any, Callable, Literal

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from acmenfs import __version__
from acmenfs.appliance.errors import ApplianceError
from acmenfs.appliance.metrics import HttpRequestStats, build_registry, render_metrics
from acmenfs.appliance.models import ACCESS_LEVELS, MAX_OWNER_ID, MAX_SIZE, SQUASH_KINDS, VOLUME_MODES, AccessRule

logger = logging.getLogger(__name__)

API_VERSION = 1
PROBLEM_MEDIA_TYPE = "application/problem+json"
PUBLIC_V1_PATHS = frozenset({"/v1/version"})
MAX_BODY_BYTES = 1 << 20  # the largest real request (a share with many access rules) is a few KiB

# The same rule as models.validate_name (the service checks again); a test keeps them equal.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
NAME_RULE = "1-128 characters of [A-Za-z0-9._-], not starting with '.'"


# --------------------------------------------------------------------------- problems


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The RFC 9457 problem document every error answer carries."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return body


def problem_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, **extra),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def unauthorized_response(detail: str) -> JSONResponse:
    return problem_response(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


CODE_FOR_HTTP_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


# --------------------------------------------------------------------------- request models


Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN, description=NAME_RULE)
]
Size = Annotated[int, Field(gt=0, le=MAX_SIZE, description="bytes, 1 .. 1 PiB")]
Mode = Literal[tuple(VOLUME_MODES)]  # "0660" or "0666", leading zero optional
OwnerId = Annotated[int, Field(ge=0, le=MAX_OWNER_ID, description=f"a uid or gid, 0 .. {MAX_OWNER_ID}")]
AccessLevel = Literal[ACCESS_LEVELS]
SquashKind = Literal[SQUASH_KINDS]
# The client's syntax is checked by AccessRule itself (to_rule), answering invalid_access.
Client = Annotated[str, Field(min_length=1, description="a host IP, a CIDR, or '*'")]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AccessRuleIn(StrictModel):
    client: Client
    access: AccessLevel = "rw"
    squash: SquashKind = "root"

    def to_rule(self) -> AccessRule:
        return AccessRule(client=self.client, access=self.access, squash=self.squash)


class VolumeIn(StrictModel):
    name: Name
    sparse: bool = True
    mode: Mode = "0660"
    uid: OwnerId | None = None
    gid: OwnerId | None = None


class ShareCreate(StrictModel):
    name: Name
    size: Size
    volume: VolumeIn | None = None
    access: list[AccessRuleIn] | None = None


class ShareExtend(StrictModel):
    size: Size


class VolumePut(StrictModel):
    name: Name
    size: Size | None = None
    sparse: bool = True
    mode: Mode = "0660"
    uid: OwnerId | None = None
    gid: OwnerId | None = None


class SnapshotCreate(StrictModel):
    name: Name


class SnapshotClone(StrictModel):
    name: Name
    size: Size | None = None
    volume_name: Name | None = None
    volume_uid: OwnerId | None = None
    volume_gid: OwnerId | None = None
    access: list[AccessRuleIn] | None = None


class ShareRevert(StrictModel):
    snapshot_id: str = Field(min_length=1)


class TokenCreate(StrictModel):
    name: Name


def _rules(access: list[AccessRuleIn] | None) -> list[AccessRule] | None:
    return None if access is None else [rule.to_rule() for rule in access]


# --------------------------------------------------------------------------- response models
# They document the answers in the OpenAPI document. Endpoints return JSONResponse
# built from the service models' to_dict(), so these are not re-validated per request;
# the tests check real answers against them.


class AccessRuleOut(BaseModel):
    client: str
    access: AccessLevel
    squash: SquashKind


class VolumeOut(BaseModel):
    name: str
    size: int
    sparse: bool
    mode: str
    allocated_bytes: int
    uid: int
    gid: int


class ShareNfsOut(BaseModel):
    host: str
    port: int
    mount_port: int
    location: str
    url: str


class ShareOut(BaseModel):
    id: str
    name: str
    size: int
    state: Literal["creating", "available", "deleting", "error"]
    export_path: str
    created_at: str
    origin_snapshot_id: str | None
    used_bytes: int
    access: list[AccessRuleOut]
    volume: VolumeOut | None
    nfs: ShareNfsOut


class ShareListOut(BaseModel):
    shares: list[ShareOut]


class SnapshotOut(BaseModel):
    id: str
    share_id: str
    name: str
    created_at: str
    size: int
    path: str


class SnapshotListOut(BaseModel):
    snapshots: list[SnapshotOut]


class PoolNfsOut(BaseModel):
    host: str
    port: int
    mount_port: int


class PoolOut(BaseModel):
    backend: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    provisioned_bytes: int
    share_count: int
    snapshot_count: int
    nfs: PoolNfsOut


class TokenOut(BaseModel):
    id: str
    name: str
    created_at: str


class TokenListOut(BaseModel):
    tokens: list[TokenOut]


class TokenCreatedOut(BaseModel):
    id: str
    name: str
    token: str = Field(description="the secret; shown only in this answer")


class VersionOut(BaseModel):
    api_version: int
    version: str


class FieldErrorOut(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldErrorOut] | None = Field(None, description="validation errors (422 only)")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemOut, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": phrase}
    for status, phrase in (
        (400, "Unparsable request"),
        (401, "Missing or invalid token"),
        (404, "Not found"),
        (409, "Conflict"),
        (422, "Invalid request"),
        (507, "No space left in the pool"),
    )
}


# --------------------------------------------------------------------------- middleware


class HttpMetricsMiddleware:
    """Counts requests by method, route template and status (outermost layer)."""

    def __init__(self, app, stats: HttpRequestStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = anyio.current_time()

        async def send_recording_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.stats.observe(scope["method"], route, status, anyio.current_time() - started)


class CrashToProblemMiddleware:
    """Turns an unexpected exception into a 500 problem answer without details.

    The traceback goes to the log, never to the client. Inside the metrics
    middleware, so crashes are counted as 500s.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracking_start(message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception:
            logger.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = problem_response(
                500, "internal_error", "internal server error; the appliance log has the details"
            )
            await response(scope, receive, send)


class BearerAuthMiddleware:
    """Refuses every ``/v1`` request except the public ones without a valid token.

    Runs before routing and body parsing, so an unauthenticated caller learns
    nothing (not even whether its JSON was valid). Token lookup is a service
    call (SQLite), made in a worker thread to keep the event loop free.
    """

    def __init__(self, app, verify_token: Callable[[str], Any]) -> None:
        self.app = app
        self.verify_token = verify_token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self._needs_token(scope["path"]):
            refusal = await self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _needs_token(path: str) -> bool:
        return (path == "/v1" or path.startswith("/v1/")) and path not in PUBLIC_V1_PATHS

    async def _refusal(self, scope) -> JSONResponse | None:
        secret = _bearer_secret(scope)
        if secret is None:
            return unauthorized_response(
                "this endpoint needs an 'Authorization: Bearer <token>' header"
            )
        token = await anyio.to_thread.run_sync(self.verify_token, secret)
        if token is None:
            return unauthorized_response("the bearer token is invalid or was revoked")
        scope.setdefault("state", {})["token"] = token
        return None


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with 413 (no request here needs more)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, receive_within_limit, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    def _too_large(self) -> JSONResponse:
        return problem_response(413, "request_too_large", self._detail(), headers={"Connection": "close"})


def _bearer_secret(scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            secret = secret.strip()
            if scheme.lower() == "bearer" and secret:
                return secret
            return None
    return None


# --------------------------------------------------------------------------- error handlers


def _field_name(loc: tuple) -> str:
    """A pydantic error location as a field path: ("body", "access", 0, "client") -> access[0].client."""
    parts = loc[1:] if loc and loc[0] in ("body", "query", "path") else loc
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def _code_for_error_location(loc: tuple) -> str:
    names = [part for part in loc[1:] if isinstance(part, str)]
    if any(part in ("access", "client", "squash") for part in names):
        return "invalid_access"
    if names and names[-1] == "size":
        return "invalid_size"
    if names and names[-1] in ("name", "volume_name"):
        return "invalid_name"
    return "invalid_request"


def _describe_validation_error(error: dict) -> str:
    field = _field_name(tuple(error.get("loc", ())))
    message = error.get("msg", "invalid value")
    if error.get("type") == "string_pattern_mismatch" and field.endswith("name"):
        message = f"must be {NAME_RULE}"
    if error.get("type") == "missing" and field == "body":
        return "a JSON request body is required"
    return f"{field}: {message}"


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        reason = next(
            (e.get("ctx", {}).get("error") for e in errors if e.get("type") == "json_invalid"),
            None,
        )
        detail = "the request body is not valid JSON" + (f" ({reason})" if reason else "")
        return problem_response(400, "invalid_request", detail)
    described = [
        {"field": _field_name(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
        for e in errors
    ]
    detail = "; ".join(_describe_validation_error(e) for e in errors)
    code = _code_for_error_location(tuple(errors[0].get("loc", ()))) if errors else "invalid_request"
    return problem_response(422, code, detail, errors=described)


async def _on_appliance_error(request: Request, exc: ApplianceError) -> JSONResponse:
    return problem_response(exc.status, exc.code, exc.detail)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    code = CODE_FOR_HTTP_STATUS.get(status, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.url.path}"
    elif status == 405 and detail == "Method Not Allowed":
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return problem_response(status, code, detail, headers=getattr(exc, "headers", None))


# --------------------------------------------------------------------------- routes


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


def _no_content() -> Response:
    return Response(status_code=204)


def _share_routes(router: APIRouter, service) -> None:
    def share_json(share, status: int = 200) -> JSONResponse:
        return _json(share.to_dict(service.nfs), status)

    @router.post("/shares", status_code=201, response_model=ShareOut, tags=["shares"],
                 summary="Create a share (and its volume file)")
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
    def remove_access(share_id: str, client: Annotated[str, Query(min_length=1)]):
        return share_json(service.remove_access(share_id, client))

    @router.post("/shares/{share_id}/revert", response_model=ShareOut, tags=["shares"],
                 summary="Bring a share's contents back to a snapshot")
    def revert_share(share_id: str, body: ShareRevert):
        return share_json(service.revert_share(share_id, body.snapshot_id))


def _snapshot_routes(router: APIRouter, service) -> None:
    @router.post("/shares/{share_id}/snapshots", status_code=201, response_model=SnapshotOut,
                 tags=["snapshots"], summary="Snapshot a share")
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
                 tags=["snapshots"], summary="Make a new share from a snapshot")
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


def create_app(service, *, nfs_stats: Callable[[], dict] | None = None) -> FastAPI:
    """The REST application for ``service``.

    ``nfs_stats`` returns the NFS server's live counters (``NfsServer.stats``)
    for /metrics; without it the NFS metric families are empty.
    """
    app = FastAPI(
        title="acmenfs appliance API",
        version=__version__,
        description="Shares, snapshots, clones and access lists of an acmenfs appliance. "
        "Every /v1 path except /v1/version needs 'Authorization: Bearer <token>'.",
        openapi_url="/openapi.json",
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
    app.add_middleware(BodySizeLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(BearerAuthMiddleware, verify_token=service.verify_token)
    app.add_middleware(CrashToProblemMiddleware)
    app.add_middleware(HttpMetricsMiddleware, stats=http_stats)

    @app.get("/v1/version", response_model=VersionOut, tags=["meta"], summary="API version")
    def version():
        return _json({"api_version": API_VERSION, "version": __version__})

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def metrics():
        body, content_type = render_metrics(registry)
        return Response(body, media_type=content_type)

    bearer = HTTPBearer(auto_error=False, description="a token from `acmenfs token create` "
                        "or <data-dir>/admin.token")
    router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=PROBLEM_RESPONSES)
    _share_routes(router, service)
    _snapshot_routes(router, service)
    _admin_routes(router, service)
    app.include_router(router)
    from acmenfs.console import install_console  # /ui and the offline /docs (imports this module)

    install_console(app, service, nfs_stats=nfs_stats)
    return app
