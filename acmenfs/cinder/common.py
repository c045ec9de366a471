"""Small helpers every part of the Cinder driver uses: GiB sizes and backend errors.

Owns: converting Cinder's GiB sizes to the appliance's bytes and back (rounded
up), and wrapping appliance errors into the exception Cinder expects from a
backend. Must not call the appliance or know Cinder objects.
"""

from __future__ import annotations

import math

from oslo_utils import units

from cinder import exception
from cinder.i18n import _


def gib_to_bytes(size_gib: int) -> int:
    return int(size_gib) * units.Gi


def bytes_to_gib_rounded_up(size: int) -> int:
    return max(1, int(math.ceil(size / units.Gi)))


def backend_error(action: str, error: Exception) -> exception.VolumeBackendAPIException:
    return exception.VolumeBackendAPIException(data=_("acmenfs: %(action)s failed: %(error)s")
                                               % {"action": action, "error": error})
