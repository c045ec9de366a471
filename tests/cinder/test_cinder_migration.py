"""Generic volume migration through Cinder's real VolumeManager, with the data read after.

Three backends run in-process, each a real VolumeManager behind real (fake-transport)
RPC servers, so ``migrate_volume``, ``rpcapi.create_volume``,
``rpcapi.update_migrated_volume`` (a call to the destination host) and the final
``rpcapi.delete_volume`` (a cast to the source host after
``Volume.finish_volume_migration`` swapped the rows) all route as in a deployment.
``mig_src`` and ``mig_near`` share one appliance, ``mig_far`` has its own.

One step is replaced: ``VolumeManager._copy_volume_data`` attaches both volumes with
os-brick, which mounts over the kernel NFS client this machine lacks. The test copies
the bytes over NFS from user space instead (our client, the appliances' real NFS
servers); everything before and after it is Cinder's code.
"""

from __future__ import annotations

import os
import time

import pytest

from cinder import context as cinder_context
from cinder import objects

from acmenfs.cinder.appliance_client import ApplianceClient, ApplianceNotFound
from conftest import (CINDER_HOST, VolumeService, backend_section, db_volume, require_nfs,
                      start_appliance, stop_appliance, volume_file_io)

MIB = 1024 ** 2
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def far_appliance(tmp_path_factory, cinder_conf):
    found = start_appliance(tmp_path_factory.mktemp("far-appliance"))
    yield found
    stop_appliance(found)


@pytest.fixture(scope="module")
def services(cinder_conf, appliance, far_appliance):
    require_nfs(appliance)
    backend_section("mig_src", appliance)
    backend_section("mig_near", appliance)
    backend_section("mig_far", far_appliance)
    running = {name: VolumeService(name, rpc_servers=True) for name in ("mig_src", "mig_near", "mig_far")}
    yield running
    for service in running.values():
        service.stop()


@pytest.fixture(scope="module")
def appliances(appliance, far_appliance):
    """Backend name -> (appliance, REST client)."""
    clients = {id(found): (found, ApplianceClient(found.url, found.token)) for found in (appliance, far_appliance)}
    yield {"mig_src": clients[id(appliance)], "mig_near": clients[id(appliance)],
           "mig_far": clients[id(far_appliance)]}
    for _, client in clients.values():
        client.close()


def backend_of(volume) -> str:
    return volume.host.split("@", 1)[1].split("#", 1)[0]


def share_at(rest, provider_location: str) -> dict:
    """The share serving ``provider_location`` (``host:/export``), found by its export path."""
    export_path = provider_location.split(":", 1)[1]
    [share] = rest.list_shares(export_path=export_path)
    return share


def volume_bytes(appliance, rest, provider_location: str, name: str, length: int) -> bytes:
    """What an NFS client reading ``provider_location``/``name`` sees (as Nova would open it)."""
    return volume_file_io(appliance, rest, share_at(rest, provider_location)["id"], name, length=length)[0]


def write_volume_bytes(appliance, rest, provider_location: str, name: str, data: bytes) -> None:
    volume_file_io(appliance, rest, share_at(rest, provider_location)["id"], name, data=data)


def userspace_copy(appliances, length: int):
    """Stands in for VolumeManager._copy_volume_data (os-brick would mount both volumes)."""
    def copy_volume_data(ctxt, src_vol, dest_vol, remote=None):
        source_appliance, source_rest = appliances[backend_of(src_vol)]
        dest_appliance, dest_rest = appliances[backend_of(dest_vol)]
        data = volume_bytes(source_appliance, source_rest, src_vol.provider_location, src_vol.name, length)
        write_volume_bytes(dest_appliance, dest_rest, dest_vol.provider_location, dest_vol.name, data)
    return copy_volume_data


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        outcome = condition()
        if outcome:
            return outcome
        time.sleep(0.1)
    pytest.fail(f"still waiting after {WAIT_SECONDS}s for {what}")


def share_gone(rest, share_id: str) -> bool:
    try:
        rest.get_share(share_id)
    except ApplianceNotFound:
        return True
    return False


def temporary_volume_deleted(volume_id: str) -> bool:
    """The manager's cast delete_volume of the migration's leftover row has finished."""
    ctxt = cinder_context.get_admin_context(read_deleted="yes")
    leftovers = [found for found in objects.VolumeList.get_all(ctxt, filters={})
                 if found.display_description == f"migration src for {volume_id}"]
    return bool(leftovers) and all(found.deleted for found in leftovers)


def migrate(services, appliances, source: str, target: str, monkeypatch):
    """Create a volume on ``source``, fill it, migrate it to ``target`` as the API's
    migrate_volume would (force_host_copy: the generic path), wait for the cleanup."""
    ctxt = cinder_context.get_admin_context()
    source_manager = services[source].manager
    volume = db_volume(ctxt, size=1, backend=source)
    source_manager.create_volume(ctxt, volume)
    volume.refresh()
    data = os.urandom(MIB) + bytes(MIB) + os.urandom(4096)
    write_volume_bytes(*appliances[source], volume.provider_location, volume.name, data)
    before = {"share": volume.provider_id, "location": volume.provider_location, "name": volume.name}

    monkeypatch.setattr(source_manager, "_copy_volume_data", userspace_copy(appliances, len(data)))
    volume.update({"status": "maintenance", "previous_status": "available", "migration_status": "starting"})
    volume.save()
    target_host = f"{CINDER_HOST}@{target}#{target}"
    source_manager.migrate_volume(ctxt, volume, {"host": target_host, "cluster_name": None},
                                  force_host_copy=True)
    volume.refresh()
    wait_for(lambda: temporary_volume_deleted(volume.id), "the manager to delete what the migration left")
    return volume, data, before


@pytest.mark.parametrize("target", ["mig_near", "mig_far"], ids=["same-appliance", "other-appliance"])
def test_migrated_volume_keeps_its_data_on_the_new_share(services, appliances, target, monkeypatch):
    volume, data, before = migrate(services, appliances, "mig_src", target, monkeypatch)
    source_rest = appliances["mig_src"][1]
    target_appliance, target_rest = appliances[target]

    assert (volume.migration_status, volume.status) == ("success", "available")
    assert volume.host == f"{CINDER_HOST}@{target}#{target}"
    # The source share (the copy left behind) is what the manager deleted, nothing else.
    assert share_gone(source_rest, before["share"])
    # provider_id and provider_location name the same, surviving, new share ...
    share = target_rest.get_share(volume.provider_id)
    assert share["nfs"]["location"] == volume.provider_location != before["location"]
    assert share_at(target_rest, volume.provider_location)["id"] == volume.provider_id
    # ... whose file has the volume's name (renamed back: it was available) and its bytes.
    assert volume.name == before["name"] and share["volume"]["name"] == volume.name
    assert volume_bytes(target_appliance, target_rest, volume.provider_location, volume.name,
                        len(data)) == data


@pytest.mark.parametrize("target", ["mig_near", "mig_far"], ids=["same-appliance", "other-appliance"])
def test_migrated_volume_is_managed_by_its_new_backend(services, appliances, target, monkeypatch):
    volume, _, before = migrate(services, appliances, "mig_src", target, monkeypatch)
    ctxt = cinder_context.get_admin_context()
    target_rest = appliances[target][1]
    manager = services[target].manager

    connection = manager.initialize_connection(ctxt, volume, {"ip": "10.9.8.7", "host": "compute-7"})
    assert connection["data"]["export"] == volume.provider_location
    assert connection["data"]["name"] == volume.name
    manager.terminate_connection(ctxt, volume.id, {"ip": "10.9.8.7", "host": "compute-7"})

    volume.update({"status": "extending"})
    volume.save()
    manager.extend_volume(ctxt, volume, 2, [])
    assert target_rest.get_share(volume.provider_id)["volume"]["size"] == 2 * 1024 * MIB

    share_id = volume.provider_id
    volume.update({"status": "deleting"})
    volume.save()
    manager.delete_volume(ctxt, volume)
    assert share_gone(target_rest, share_id)
