"""The REST API's HTTP plumbing: problem answers, middleware and error handlers.

Owns the RFC 9457 problem documents, the ASGI middleware (request metrics,
crash-to-500, Bearer authentication, body size limit), the exception
handlers that turn validation, appliance and HTTP errors into problem JSON,
and ``MetricsAuth`` (who may read /metrics: anyone, token holders, or a
client list).
It must not know any route or call the service beyond ``verify_token``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

import anyio.to_thread
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from acmenfs.appliance.api_models import CLIENT_RULE, NAME_RULE, PROBLEM_MEDIA_TYPE
from acmenfs.appliance.errors import ApplianceError
from acmenfs.appliance.metrics import HttpRequestStats

logger = logging.getLogger("acmenfs.appliance.api")

PUBLIC_V1_PATHS = frozenset({"/v1/version"})
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class MetricsAuth:
    """Who may read /metrics: ``mode`` "none" (anyone), "token" (any API token) or "clients"."""

    mode: str = "none"
    clients: tuple[IpNetwork, ...] = ()

    def refusal(self, scope, verify_token: Callable[[str], Any]) -> JSONResponse | None:
        """None if the request may read /metrics, else the problem answer (401 or 403)."""
        if self.mode == "token":
            secret = _bearer_secret(scope)
            if secret is None or verify_token(secret) is None:
                return unauthorized_response("/metrics needs 'Authorization: Bearer <token>' (--metrics-auth token)")
        elif self.mode == "clients" and not self._allowed(scope.get("client")):
            return problem_response(403, "forbidden", "this client may not read /metrics (--metrics-auth)")
        return None

    def _allowed(self, client) -> bool:
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address is not None and any(address in network for network in self.clients)


def open_metrics_warning(bind: str, metrics_auth: MetricsAuth) -> str | None:
    """A warning when /metrics is open to anyone on a non-loopback address, else None."""
    if metrics_auth.mode != "none":
        return None
    try:
        if ipaddress.ip_address(bind).is_loopback:
            return None
    except ValueError:
        if bind == "localhost":
            return None
    return (f"/metrics is readable by anyone who reaches {bind}; pass --metrics-auth token "
            "or --metrics-auth <client IPs/CIDRs> to restrict it")


def parse_metrics_auth(text: str) -> MetricsAuth:
    """``none``, ``token``, or a comma-separated list of client IPs/CIDRs (ValueError otherwise)."""
    text = text.strip()
    if text in ("none", "token"):
        return MetricsAuth(text)
    clients = []
    for item in text.split(","):
        try:
            clients.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"--metrics-auth takes 'none', 'token' or a list of client IPs/CIDRs, "
                             f"not {text!r}") from None
    return MetricsAuth("clients", tuple(clients))


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
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
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
        return _is_api_path(path) and path not in PUBLIC_V1_PATHS

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


class JsonBodyMiddleware:
    """Refuses a ``/v1`` request body that is not declared JSON with 415 (every API body is JSON).

    Runs after authentication. A request without a body passes whatever its
    Content-Type; ``application/json`` and any ``+json`` type pass. Paths
    outside ``/v1`` (a web console's forms) are not its business.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _is_api_path(scope["path"]) and _has_body(scope) and not _is_json(scope):
            await problem_response(415, "unsupported_media_type",
                                   "the request body must be JSON (Content-Type: application/json)")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _header(scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


def _has_body(scope) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() != "0")


def _is_json(scope) -> bool:
    media_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


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
    elif error.get("type") == "string_pattern_mismatch" and field.endswith("client"):
        message = f"must be {CLIENT_RULE}, not {error.get('input')!r}"
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
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    return problem_response(status, code, detail, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document gives the request's path (Starlette names only one route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)