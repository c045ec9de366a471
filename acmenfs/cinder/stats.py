"""Capacity stats for Cinder's scheduler, and thin or thick per volume.

Owns: turning the appliance's pool (``GET /v1/pool``) into the one pool the
driver reports, and the choice of a sparse or fully allocated volume file from
the volume type's ``provisioning:type`` (``nfs_sparsed_volumes`` otherwise).

Must not: report ``allocated_capacity_gb``. The VolumeManager counts the
volumes Cinder provisioned on this backend and sets that key on the pool it
publishes; the pool's used bytes (the whole file system's, snapshots and other
tenants included) are not that figure. ``provisioned_capacity_gb`` is the
appliance's: every share's size, Cinder's or not, which is what Cinder defines.

Capacity is the pool's: ``total_bytes`` and ``free_bytes`` as ``GET /v1/pool``
reports them (free is what an unprivileged writer may still use, so the file
system's root reserve is already out of it), free rounded down. The pool API
has no other limit to honor; one the appliance adds belongs in ``free_bytes``.

``total_volumes`` is this backend's: the volumes Cinder's database places on
its host (its cluster when clustered), counted as the VolumeManager counts its
own. The pool's ``share_count`` is not it: other backends on the same
appliance, and shares made outside Cinder, are in there too.

Thin and thick: the appliance makes both, so thick is always supported; thin
is reported when volumes without a ``provisioning:type`` are sparse
(``nfs_sparsed_volumes``), because the scheduler treats such volumes as thin
and would over-subscribe thick ones.
"""

from __future__ import annotations

import math
from typing import Any

from oslo_utils import units

from oslo_db import exception as db_exception
from oslo_log import log as logging

from cinder.common import constants
from cinder import context as cinder_context
from cinder import exception
from cinder import objects
from cinder.volume import volume_types

LOG = logging.getLogger(__name__)

PROVISIONING_TYPE = "provisioning:type"


def _gib(size: int) -> float:
    return round(size / units.Gi, 2)


def _gib_rounded_down(size: int) -> float:
    """Free space never rounded up: the scheduler must not see more than there is."""
    return math.floor(size * 100 / units.Gi) / 100


def backend_volume_count(host: str | None, cluster_name: str | None) -> int | None:
    """Volumes of this backend in Cinder's database (not deleted); None when it cannot be read."""
    filters = {"cluster_name": cluster_name} if cluster_name else {"host": host}
    try:
        # (count, gigabytes, metadata); [] when the filters match nothing at all
        summary = objects.VolumeList.get_volume_summary(cinder_context.get_admin_context(), False, filters)
    except db_exception.DBError as error:  # stats must still be reported
        LOG.warning("acmenfs: cannot count this backend's volumes for total_volumes: %s", error)
        return None
    return int(summary[0]) if summary else 0


def pool_stats(pool: dict, *, pool_name: str, sparse_default: bool, reserved_percentage: int,
               max_over_subscription_ratio: float, total_volumes: int | None = None) -> dict:
    """The driver's one pool, from ``GET /v1/pool``; ``total_volumes`` left out when unknown."""
    stats = {
        "pool_name": pool_name,
        "total_capacity_gb": _gib(pool["total_bytes"]),
        "free_capacity_gb": _gib_rounded_down(pool["free_bytes"]),
        "provisioned_capacity_gb": _gib(pool.get("provisioned_bytes", 0)),
        "reserved_percentage": reserved_percentage,
        "max_over_subscription_ratio": max_over_subscription_ratio,
        "thin_provisioning_support": sparse_default,
        "thick_provisioning_support": True,
        "multiattach": True,
        "online_extend_support": True,
        "QoS_support": False,
    }
    if total_volumes is not None:
        stats["total_volumes"] = total_volumes
    return stats


def backend_stats(pool: dict, *, backend_name: str, vendor_name: str, driver_version: str) -> dict:
    return {
        "volume_backend_name": backend_name,
        "vendor_name": vendor_name,
        "driver_version": driver_version,
        "storage_protocol": constants.NFS,
        "sparse_copy_volume": True,
        "pools": [pool],
    }


def _provisioning_type(volume: Any) -> str | None:
    type_id = getattr(volume, "volume_type_id", None)
    if not type_id:
        return None
    try:
        return (volume_types.get_volume_type_extra_specs(type_id) or {}).get(PROVISIONING_TYPE)
    except exception.VolumeTypeNotFound:
        return None


def volume_is_sparse(volume: Any, default: bool) -> bool:
    """``provisioning:type`` thin -> sparse, thick -> fully allocated, else ``default``."""
    return {"thin": True, "thick": False}.get(_provisioning_type(volume), default)
