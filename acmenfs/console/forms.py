"""Reading what the console's forms send: url-encoded bodies, sizes, access rules.

Owns ``form_fields`` (a FastAPI dependency that reads an
``application/x-www-form-urlencoded`` body on the event loop, without
python-multipart), and ``size_field``/``access_field``, which turn the human
inputs (``10G``, ``10.0.0.0/24:ro:all``) into values with the CLI's own parsers
and raise ``FormError`` with a sentence for the page. The service validates again.
"""

from __future__ import annotations

import argparse
from urllib.parse import parse_qsl

from fastapi import Request

from acmenfs.appliance.models import AccessRule
from acmenfs.cli.manage import parse_access, parse_size

MAX_FORM_BYTES = 64 << 10


class FormError(Exception):
    """A form value the console refuses before calling the service (``code`` as the API would answer)."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


async def form_fields(request: Request) -> dict[str, str]:
    """The submitted fields (last value wins); empty for other content types."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def size_field(fields: dict[str, str], name: str = "size", required: bool = True) -> int | None:
    text = fields.get(name, "").strip()
    if not text:
        if required:
            raise FormError(f"{name}: a size is needed (bytes, or a number with K, M, G, T, e.g. 10G)", "invalid_size")
        return None
    try:
        return parse_size(text)
    except argparse.ArgumentTypeError as exc:
        raise FormError(f"{name}: {exc}", "invalid_size") from None


def access_field(text: str) -> AccessRule:
    """``CLIENT[:rw|ro[:root|all|none]]`` -> an AccessRule (the service's own validation)."""
    try:
        parsed = parse_access(text.strip())
    except argparse.ArgumentTypeError as exc:
        raise FormError(str(exc), "invalid_access") from None
    return AccessRule(**parsed)  # raises InvalidRequest (invalid_access) for a bad client


def access_list(text: str) -> list[AccessRule]:
    """Rules separated by commas, spaces or new lines (empty -> no rules)."""
    return [access_field(part) for part in text.replace(",", " ").split()]


def text_field(fields: dict[str, str], name: str) -> str:
    return fields.get(name, "").strip()
