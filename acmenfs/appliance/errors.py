"""Appliance errors: the exceptions the service raises for refused or failed requests.

Owns the error classes and their stable ``code`` strings (the REST layer turns
``status``/``code``/``detail`` into problem JSON; the Cinder driver keys on
``code``). It must not know about HTTP frameworks or do any I/O.
"""

from __future__ import annotations

import errno


class ApplianceError(Exception):
    """A refused or failed management request.

    ``status`` is the HTTP status the REST layer answers with, ``code`` a stable
    machine-readable string, ``detail`` a sentence for humans.
    """

    status = 500
    default_code = "internal_error"

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class NotFound(ApplianceError):
    status = 404
    default_code = "not_found"


class Conflict(ApplianceError):
    """409: ``name_conflict``, ``share_has_snapshots`` or ``share_busy``."""

    status = 409
    default_code = "share_busy"


class InvalidRequest(ApplianceError):
    """422: ``invalid_size``, ``invalid_name``, ``invalid_access`` or ``invalid_request``."""

    status = 422
    default_code = "invalid_request"


class NoSpace(ApplianceError):
    status = 507
    default_code = "no_space"


class StorageError(ApplianceError):
    """500: the file system failed in a way the request could not cause or avoid."""

    status = 500
    default_code = "storage_error"


def error_for_os_error(exc: OSError, action: str) -> ApplianceError:
    """Translate a file-system failure during ``action`` into an ApplianceError."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{action}: no space left in the pool ({reason})")
    if exc.errno == errno.EFBIG:
        return InvalidRequest(f"{action}: size too large for the pool's file system ({reason})", "invalid_size")
    return StorageError(f"{action}: {reason}")
