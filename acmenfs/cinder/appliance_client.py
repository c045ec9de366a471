"""REST client for the acmenfs appliance API v1 (docs/rest-api.md), on ``requests``.

Owns: the HTTP calls, the bearer token, TLS verification, timeouts, and turning
problem JSON answers into ``ApplianceError`` exceptions that carry the stable
``code``. Must not import Cinder or anything cinder-volume lacks (it runs in the
Cinder process): only ``requests`` and the standard library. Knows nothing of
Cinder objects; the driver translates between the two worlds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

SUPPORTED_API_VERSION = 1
DEFAULT_TIMEOUT = 60.0


class ApplianceError(Exception):
    """The appliance answered with an error (problem JSON) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ApplianceUnreachable(ApplianceError):
    """No HTTP answer at all: connection refused, DNS, TLS handshake, timeout."""


class ApplianceAuthError(ApplianceError):
    """The token was missing or refused (401)."""


class ApplianceNotFound(ApplianceError):
    """The object does not exist (404 not_found)."""


class ApplianceConflict(ApplianceError):
    """409: name_conflict, share_has_snapshots or share_busy (see ``code``)."""


def _problem_of(response: requests.Response) -> tuple[str, str | None]:
    """The (detail, code) of a problem JSON answer, tolerating non-JSON bodies."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:200]
        return (text or response.reason or f"HTTP {response.status_code}"), None
    if not isinstance(body, dict):
        return str(body)[:200], None
    detail = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
    return str(detail), body.get("code")


_ERROR_CLASS_BY_STATUS = {401: ApplianceAuthError, 404: ApplianceNotFound, 409: ApplianceConflict}


class ApplianceClient:
    """One appliance, one token. Thread-safe enough for Cinder's green threads.

    ``verify`` follows ``requests``: True (system CAs), False, or a CA bundle path.
    """

    def __init__(self, base_url: str, token: str, *, verify: bool | str = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ApplianceError(f"appliance URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Passed on every request: a session-level ``verify`` loses against
        # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment.
        self._verify = verify
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self._session.close()

    # -- transport ---------------------------------------------------------
    def _request(self, method: str, path: str, *, json: Any = None,
                 params: dict | None = None, authenticated: bool = True) -> Any:
        url = f"{self.base_url}{path}"
        headers = None if authenticated else {"Authorization": None}
        try:
            response = self._session.request(method, url, json=json, params=params, verify=self._verify,
                                             timeout=self.timeout, headers=headers)
        except requests.exceptions.SSLError as exc:
            raise ApplianceUnreachable(f"TLS error talking to appliance at {url}: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise ApplianceUnreachable(f"appliance unreachable at {url}: {exc}") from exc
        if response.status_code >= 400:
            detail, code = _problem_of(response)
            error_class = _ERROR_CLASS_BY_STATUS.get(response.status_code, ApplianceError)
            raise error_class(f"{method} {path}: {response.status_code} {detail}",
                              status=response.status_code, code=code)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApplianceError(f"{method} {path}: answer is not JSON "
                                 f"({response.text[:100]!r})", status=response.status_code) from exc

    # -- service -------------------------------------------------------------
    def version(self) -> dict:
        return self._request("GET", "/v1/version", authenticated=False)

    def pool(self) -> dict:
        return self._request("GET", "/v1/pool")

    # -- shares --------------------------------------------------------------
    def create_share(self, name: str, size: int, *, volume: dict | None = None,
                     access: list[dict] | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "size": size}
        if volume is not None:
            body["volume"] = volume
        if access:
            body["access"] = access
        return self._request("POST", "/v1/shares", json=body)

    def list_shares(self, *, name: str | None = None, export_path: str | None = None) -> list[dict]:
        params = {key: value for key, value in (("name", name), ("export_path", export_path)) if value}
        return self._request("GET", "/v1/shares", params=params or None)["shares"]

    def get_share(self, share_id: str) -> dict:
        return self._request("GET", f"/v1/shares/{quote(share_id, safe='')}")

    def delete_share(self, share_id: str, *, cascade: bool = False) -> None:
        params = {"cascade": "true"} if cascade else None
        self._request("DELETE", f"/v1/shares/{quote(share_id, safe='')}", params=params)

    def extend_share(self, share_id: str, size: int) -> dict:
        return self._request("POST", f"/v1/shares/{quote(share_id, safe='')}/extend", json={"size": size})

    def put_volume(self, share_id: str, name: str, **fields: Any) -> dict:
        """Create or rename (and grow) the share's volume file: fields size/sparse/mode/uid/gid."""
        body = {"name": name, **{key: value for key, value in fields.items() if value is not None}}
        return self._request("PUT", f"/v1/shares/{quote(share_id, safe='')}/volume", json=body)

    def add_access(self, share_id: str, client: str, *, access: str = "rw", squash: str = "root") -> dict:
        return self._request("POST", f"/v1/shares/{quote(share_id, safe='')}/access",
                             json={"client": client, "access": access, "squash": squash})

    def remove_access(self, share_id: str, client: str) -> dict:
        return self._request("DELETE", f"/v1/shares/{quote(share_id, safe='')}/access",
                             params={"client": client})

    def revert_share(self, share_id: str, snapshot_id: str) -> dict:
        return self._request("POST", f"/v1/shares/{quote(share_id, safe='')}/revert",
                             json={"snapshot_id": snapshot_id})

    # -- snapshots -----------------------------------------------------------
    def create_snapshot(self, share_id: str, name: str) -> dict:
        return self._request("POST", f"/v1/shares/{quote(share_id, safe='')}/snapshots", json={"name": name})

    def list_snapshots(self, share_id: str) -> list[dict]:
        return self._request("GET", f"/v1/shares/{quote(share_id, safe='')}/snapshots")["snapshots"]

    def get_snapshot(self, snapshot_id: str) -> dict:
        return self._request("GET", f"/v1/snapshots/{quote(snapshot_id, safe='')}")

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._request("DELETE", f"/v1/snapshots/{quote(snapshot_id, safe='')}")

    def clone_snapshot(self, snapshot_id: str, name: str, *, size: int | None = None,
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
        if access:
            body["access"] = access
        return self._request("POST", f"/v1/snapshots/{quote(snapshot_id, safe='')}/clone", json=body)
