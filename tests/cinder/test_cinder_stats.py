"""Capacity stats as Cinder's real VolumeManager publishes them and its scheduler reads them.

The manager counts what it provisioned (``allocated_capacity_gb``) and the
driver must not put the file system's used bytes there; thick volumes are
possible on the appliance, so a volume type asking for them must pass the
real CapabilitiesFilter and get a fully allocated file; total and free are the
pool's.
"""

from __future__ import annotations

import time
import uuid

import pytest

from cinder import context as cinder_context
from cinder import objects
from cinder.scheduler import host_manager
from cinder.scheduler.filters import capabilities_filter, capacity_filter
from cinder.volume import volume_types

from conftest import CINDER_HOST, VolumeService, backend_section, db_volume

GIB = 1024 ** 3
BACKEND = "stats"


@pytest.fixture(scope="module")
def manager(cinder_conf, appliance):
    backend_section(BACKEND, appliance)
    service = VolumeService(BACKEND)
    yield service.manager
    service.stop()


def published_pool(manager) -> dict:
    """What the manager sends the scheduler for this backend's pool."""
    manager._report_driver_status(cinder_context.get_admin_context())
    [pool] = manager.last_capabilities["pools"]
    return pool


def scheduler_pool(manager) -> host_manager.PoolState:
    """The scheduler's view of the pool, built from the published capabilities."""
    backend = host_manager.BackendState(f"{CINDER_HOST}@{BACKEND}", None)
    backend.update_from_volume_capability(dict(manager.last_capabilities, timestamp=time.time()))
    return backend.pools[BACKEND]


def typed_volume(manager, ctxt, extra_specs: dict, size: int = 1):
    volume_type = volume_types.create(ctxt, f"type-{uuid.uuid4().hex[:8]}", extra_specs)
    volume = db_volume(ctxt, size=size, backend=BACKEND, volume_type_id=volume_type["id"])
    manager.create_volume(ctxt, volume)
    volume.refresh()
    return volume


def test_allocated_capacity_is_what_cinder_provisioned_not_used_bytes(manager, rest):
    ctxt = cinder_context.get_admin_context()
    for size in (1, 2):
        volume = db_volume(ctxt, size=size, backend=BACKEND)
        manager.create_volume(ctxt, volume)

    assert "allocated_capacity_gb" not in manager.driver.get_volume_stats(refresh=True)["pools"][0]
    assert published_pool(manager)["allocated_capacity_gb"] == 3


def test_total_volumes_counts_this_backends_volumes_not_every_share(manager, rest):
    ctxt = cinder_context.get_admin_context()
    before = published_pool(manager)["total_volumes"]
    volume = db_volume(ctxt, size=1, backend=BACKEND)
    manager.create_volume(ctxt, volume)
    rest.create_share(f"not-cinder-{uuid.uuid4().hex[:8]}", GIB)  # another user of the appliance

    after = published_pool(manager)["total_volumes"]
    assert after == before + 1
    count = objects.VolumeList.get_volume_summary(ctxt, False, {"host": f"{CINDER_HOST}@{BACKEND}"})[0]
    assert after == count
    assert rest.pool()["share_count"] > after  # the session's other backends and the share above


def test_total_and_free_are_the_pools(manager, rest):
    pool_stats = published_pool(manager)
    pool = rest.pool()
    assert pool_stats["total_capacity_gb"] == round(pool["total_bytes"] / GIB, 2)
    assert abs(pool_stats["free_capacity_gb"] - pool["free_bytes"] / GIB) < 0.5  # the fs moves meanwhile
    assert pool_stats["provisioned_capacity_gb"] == round(pool["provisioned_bytes"] / GIB, 2)


def test_thick_volume_type_is_scheduled_here_and_gets_a_thick_file(manager, rest):
    ctxt = cinder_context.get_admin_context()
    pool_stats = published_pool(manager)
    assert pool_stats["thick_provisioning_support"] is True
    assert pool_stats["thin_provisioning_support"] is True  # nfs_sparsed_volumes defaults to True
    thick_specs = {"provisioning:type": "thick", "thick_provisioning_support": "<is> True"}
    request = {"resource_type": {"extra_specs": thick_specs}, "volume_type": {"extra_specs": thick_specs},
               "size": 1, "request_spec": {"volume_id": None}}
    pool = scheduler_pool(manager)
    assert capabilities_filter.CapabilitiesFilter().backend_passes(pool, request)
    assert capacity_filter.CapacityFilter().backend_passes(pool, request)

    thick = typed_volume(manager, ctxt, {"provisioning:type": "thick"})
    thin = typed_volume(manager, ctxt, {"provisioning:type": "thin"})

    thick_file = rest.get_share(thick.provider_id)["volume"]
    assert thick_file["sparse"] is False and thick_file["allocated_bytes"] >= GIB
    assert rest.get_share(thin.provider_id)["volume"]["sparse"] is True
