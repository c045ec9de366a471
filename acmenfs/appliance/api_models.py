"""The REST API's request and response models (pydantic), as the OpenAPI document shows them.

Owns the strict request models (unknown fields and wrong JSON types refused),
the response models that document every answer, the problem model and the
name rule shared with ``models.validate_name``. It must not handle requests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from acmenfs.appliance.models import ACCESS_LEVELS, MAX_OWNER_ID, MAX_SIZE, SQUASH_KINDS, VOLUME_MODES, AccessRule

PROBLEM_MEDIA_TYPE = "application/problem+json"

# The same rule as models.validate_name (the service checks again); a test keeps them equal.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
NAME_RULE = "1-128 characters of [A-Za-z0-9._-], not starting with '.'"

# An access rule's client, exactly as strict as the API enforces it (pydantic checks this pattern
# before models.AccessRule parses the address; a test checks that every match parses there):
# '*', an IPv4 address or CIDR (no leading zeros), or an IPv6 address or CIDR in hex notation.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6_FORMS = (
    rf"({_H}:){{7}}{_H}", rf"({_H}:){{1,7}}:", rf"({_H}:){{1,6}}:{_H}", rf"({_H}:){{1,5}}(:{_H}){{1,2}}",
    rf"({_H}:){{1,4}}(:{_H}){{1,3}}", rf"({_H}:){{1,3}}(:{_H}){{1,4}}", rf"({_H}:){{1,2}}(:{_H}){{1,5}}",
    rf"{_H}:(:{_H}){{1,6}}", rf":((:{_H}){{1,7}}|:)",
)
_IPV6 = rf"({'|'.join(_IPV6_FORMS)})(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?"
CLIENT_PATTERN = rf"^(\*|{_IPV4}|{_IPV6})$"
CLIENT_RULE = "'*', an IPv4 address or CIDR (10.0.0.0/24), or an IPv6 address or CIDR (fd00::/64)"


# --------------------------------------------------------------------------- request models


Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN, description=NAME_RULE)
]
Size = Annotated[int, Field(gt=0, le=MAX_SIZE, description="bytes, 1 .. 1 PiB")]
Mode = Literal[tuple(VOLUME_MODES)]  # "0660" or "0666", leading zero optional
OwnerId = Annotated[int, Field(ge=0, le=MAX_OWNER_ID, description=f"a uid or gid, 0 .. {MAX_OWNER_ID}")]
AccessLevel = Literal[ACCESS_LEVELS]
SquashKind = Literal[SQUASH_KINDS]
Client = Annotated[str, Field(min_length=1, max_length=64, pattern=CLIENT_PATTERN, description=CLIENT_RULE)]


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
    nfs_versions: list[str] = Field(
        description="NFS protocol versions the running NFS server serves on its port, e.g. "
        '["3", "4.0", "4.1", "4.2"]; empty when it runs without NFS (--no-nfs). Clients '
        "(the Cinder driver) pick their mount version from it; absent on appliances older than this field.")


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
        (415, "The request body is not JSON"),
        (422, "Invalid request"),
        (507, "No space left in the pool"),
    )
}


# OpenAPI links (operationIds are the route function names): what a created object's id opens,
# so clients and contract tests can follow create share -> snapshot -> clone -> delete.
def _links(parameter: str, expression: str, *operations: str) -> dict[str, Any]:
    return {
        operation: {"operationId": operation, "parameters": {parameter: expression}}
        for operation in operations
    }


SHARE_LINKS = _links(
    "share_id", "$response.body#/id", "get_share", "delete_share", "extend_share", "put_volume", "add_access",
    "remove_access", "create_snapshot", "list_snapshots",
)
SNAPSHOT_LINKS = {
    **_links("snapshot_id", "$response.body#/id", "get_snapshot", "clone_snapshot", "delete_snapshot"),
    "revert_share": {"operationId": "revert_share", "parameters": {"share_id": "$response.body#/share_id"},
                     "requestBody": {"snapshot_id": "$response.body#/id"}},
}
TOKEN_LINKS = _links("token_id", "$response.body#/id", "revoke_token")


def created_links(links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` argument that documents the links of a 201 answer."""
    return {201: {"description": "Created", "links": links}}
