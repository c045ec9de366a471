"""A small synchronous client of the appliance REST API, used by the ``acmenfs`` CLI.

Owns ``ApplianceClient`` (one method per endpoint of docs/rest-api.md, returning
the decoded JSON) and ``ApiError`` (a problem-JSON answer or a transport
failure, as a value the CLI can print). Standard library only (urllib), so the
CLI works on an appliance without test extras. It must not print, exit or
interpret answers beyond decoding them; the Cinder driver has its own client.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_TIMEOUT = 60.0


class ApiError(Exception):
    """A refused or failed API call: HTTP status (0 when unreachable), code, detail."""

    def __init__(self, status: int, code: str, detail: str, title: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status else ""
        return f"{self.detail} ({where}{self.code})"


def _problem_from(status: int, body: bytes, reason: str) -> ApiError:
    try:
        problem = json.loads(body) if body else {}
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = problem.get("detail") or reason or f"HTTP {status}"
    return ApiError(status, str(problem.get("code", "http_error")), str(detail),
                    str(problem.get("title", "")))


class ApplianceClient:
    """Calls one appliance at ``base_url`` (e.g. ``http://127.0.0.1:8080``) with a token."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
        verify_tls: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._ssl_context = self._make_ssl_context(ca_file, verify_tls)

    @staticmethod
    def _make_ssl_context(ca_file: str | None, verify_tls: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=ca_file)
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # -- transport

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = ...,  # type: ignore[assignment]
    ) -> Any:
        """One call; returns the decoded JSON answer (None for 204) or raises ApiError."""
        url = self.base_url + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        wait = self.timeout if timeout is ... else timeout
        try:
            with urllib.request.urlopen(request, timeout=wait, context=self._ssl_context) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as exc:
            raise _problem_from(exc.code, exc.read(), exc.reason) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "unreachable", f"cannot reach the appliance at {self.base_url}: "
                           f"{exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise ApiError(0, "unreachable", f"no answer from the appliance at {self.base_url}: "
                           f"{exc}") from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiError(0, "bad_answer", f"the appliance at {self.base_url} answered "
                           "something that is not JSON") from None

    # -- endpoints

    def version(self) -> dict:
        return self.request("GET", "/v1/version")

    def pool(self) -> dict:
        return self.request("GET", "/v1/pool")

    def create_share(self, name: str, size: int, volume: dict | None = None,
                     access: list[dict] | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "size": size}
        if volume is not None:
            body["volume"] = volume
        if access is not None:
            body["access"] = access
        return self.request("POST", "/v1/shares", body, timeout=None)

    def list_shares(self, name: str | None = None, export_path: str | None = None) -> list[dict]:
        answer = self.request("GET", "/v1/shares", query={"name": name, "export_path": export_path})
        return answer["shares"]

    def get_share(self, share_id: str) -> dict:
        return self.request("GET", f"/v1/shares/{_segment(share_id)}")

    def delete_share(self, share_id: str, cascade: bool = False) -> None:
        self.request("DELETE", f"/v1/shares/{_segment(share_id)}",
                     query={"cascade": cascade} if cascade else None, timeout=None)

    def extend_share(self, share_id: str, size: int) -> dict:
        return self.request("POST", f"/v1/shares/{_segment(share_id)}/extend", {"size": size},
                            timeout=None)

    def put_volume(self, share_id: str, name: str, size: int | None = None,
                   sparse: bool = True, mode: str = "0660", uid: int | None = None,
                   gid: int | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "sparse": sparse, "mode": mode}
        if size is not None:
            body["size"] = size
        if uid is not None:
            body["uid"] = uid
        if gid is not None:
            body["gid"] = gid
        return self.request("PUT", f"/v1/shares/{_segment(share_id)}/volume", body, timeout=None)

    def add_access(self, share_id: str, client: str, access: str = "rw",
                   squash: str = "root") -> dict:
        body = {"client": client, "access": access, "squash": squash}
        return self.request("POST", f"/v1/shares/{_segment(share_id)}/access", body)

    def remove_access(self, share_id: str, client: str) -> dict:
        return self.request("DELETE", f"/v1/shares/{_segment(share_id)}/access",
                            query={"client": client})

    def revert_share(self, share_id: str, snapshot_id: str) -> dict:
        return self.request("POST", f"/v1/shares/{_segment(share_id)}/revert",
                            {"snapshot_id": snapshot_id}, timeout=None)

    def create_snapshot(self, share_id: str, name: str) -> dict:
        return self.request("POST", f"/v1/shares/{_segment(share_id)}/snapshots", {"name": name},
                            timeout=None)

    def list_snapshots(self, share_id: str) -> list[dict]:
        return self.request("GET", f"/v1/shares/{_segment(share_id)}/snapshots")["snapshots"]

    def get_snapshot(self, snapshot_id: str) -> dict:
        return self.request("GET", f"/v1/snapshots/{_segment(snapshot_id)}")

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.request("DELETE", f"/v1/snapshots/{_segment(snapshot_id)}", timeout=None)

    def clone_snapshot(self, snapshot_id: str, name: str, size: int | None = None,
                       volume_name: str | None = None, access: list[dict] | None = None,
                       volume_uid: int | None = None, volume_gid: int | None = None) -> dict:
        body: dict[str, Any] = {"name": name}
        if size is not None:
            body["size"] = size
        if volume_name is not None:
            body["volume_name"] = volume_name
        if volume_uid is not None:
            body["volume_uid"] = volume_uid
        if volume_gid is not None:
            body["volume_gid"] = volume_gid
        if access is not None:
            body["access"] = access
        return self.request("POST", f"/v1/snapshots/{_segment(snapshot_id)}/clone", body,
                            timeout=None)

    def list_tokens(self) -> list[dict]:
        return self.request("GET", "/v1/tokens")["tokens"]

    def create_token(self, name: str) -> dict:
        return self.request("POST", "/v1/tokens", {"name": name})

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/v1/tokens/{_segment(token_id)}")


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
