"""AcmeNfsDriver against a live appliance with real Cinder objects (no mocks).

Each test checks what the driver returned *and* what the appliance holds
afterwards, through the appliance's REST API.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pytest
from oslo_config import cfg

from cinder import exception
from cinder import objects
from cinder.tests.unit import fake_snapshot, fake_volume

from acmenfs.cinder import options
from acmenfs.cinder.appliance_client import ApplianceNotFound
from conftest import BACKEND, fresh_group, make_driver

GIB = 1024 ** 3


def new_volume(context, size=1, **fields):
    return fake_volume.fake_volume_obj(context, id=str(uuid.uuid4()), size=size,
                                       provider_location=None, provider_id=None, **fields)


def created_volume(driver, context, size=1):
    volume = new_volume(context, size)
    volume.update(driver.create_volume(volume))
    return volume


def new_snapshot(context, volume, **fields):
    return fake_snapshot.fake_snapshot_obj(context, id=str(uuid.uuid4()), volume=volume,
                                           volume_id=volume.id, volume_size=volume.size,
                                           provider_id=None, **fields)


def created_snapshot(driver, context, volume):
    snapshot = new_snapshot(context, volume)
    snapshot.update(driver.create_snapshot(snapshot))
    return snapshot


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- volumes -------------------------------------------------------------------

def test_create_volume_makes_a_share_holding_the_volume_file(driver, context, rest, appliance):
    volume = new_volume(context, size=3)
    update = driver.create_volume(volume)

    share = rest.get_share(update["provider_id"])
    assert update["provider_location"] == f"127.0.0.1:{share['export_path']}"
    assert share["name"] == volume.name
    assert share["size"] == 3 * GIB
    assert share["volume"]["name"] == volume.name
    assert share["volume"]["size"] == 3 * GIB
    assert share["volume"]["sparse"] is True
    assert share["volume"]["mode"] == "0660"
    assert share["access"] == []


def test_thick_and_open_permission_settings_reach_the_appliance(cinder_conf, context, rest):
    driver = make_driver(fresh_group(), nfs_sparsed_volumes=False, nas_secure_file_permissions="false",
                         acmenfs_api_url=cfg.CONF[BACKEND].acmenfs_api_url,
                         acmenfs_api_token=cfg.CONF[BACKEND].acmenfs_api_token)
    volume = created_volume(driver, context)

    share = rest.get_share(volume.provider_id)
    assert share["volume"]["sparse"] is False
    assert share["volume"]["mode"] == "0666"
    stats = driver.get_volume_stats(refresh=True)["pools"][0]
    assert stats["thin_provisioning_support"] is False
    assert stats["thick_provisioning_support"] is True


def test_delete_volume_removes_stray_snapshots_and_the_share(driver, context, rest):
    volume = created_volume(driver, context)
    stray = rest.create_snapshot(volume.provider_id, "left-behind")

    driver.delete_volume(volume)

    with pytest.raises(ApplianceNotFound):
        rest.get_share(volume.provider_id)
    with pytest.raises(ApplianceNotFound):
        rest.get_snapshot(stray["id"])


def test_delete_volume_succeeds_when_already_gone(driver, context, rest):
    volume = created_volume(driver, context)
    rest.delete_share(volume.provider_id, cascade=True)

    driver.delete_volume(volume)  # share gone: no error
    driver.delete_volume(new_volume(context))  # never created, no provider_id: no error


def test_extend_volume_grows_share_and_file(driver, context, rest):
    volume = created_volume(driver, context, size=1)
    driver.extend_volume(volume, 4)

    share = rest.get_share(volume.provider_id)
    assert share["size"] == 4 * GIB
    assert share["volume"]["size"] == 4 * GIB


# -- snapshots and clones --------------------------------------------------------

def test_snapshot_provider_id_is_the_appliance_snapshot(driver, context, rest):
    volume = created_volume(driver, context)
    snapshot = created_snapshot(driver, context, volume)

    found = rest.get_snapshot(snapshot.provider_id)
    assert found["share_id"] == volume.provider_id
    assert found["name"] == snapshot.name

    driver.delete_snapshot(snapshot)
    with pytest.raises(ApplianceNotFound):
        rest.get_snapshot(snapshot.provider_id)
    driver.delete_snapshot(snapshot)  # already gone: no error


def test_volume_from_snapshot_is_a_renamed_grown_clone(driver, context, rest):
    source = created_volume(driver, context, size=1)
    snapshot = created_snapshot(driver, context, source)
    target = new_volume(context, size=2)

    update = driver.create_volume_from_snapshot(target, snapshot)

    share = rest.get_share(update["provider_id"])
    assert share["origin_snapshot_id"] == snapshot.provider_id
    assert share["name"] == target.name
    assert share["volume"]["name"] == target.name
    assert share["volume"]["size"] == 2 * GIB
    assert update["provider_location"] == f"127.0.0.1:{share['export_path']}"


def test_cloned_volume_leaves_no_temporary_snapshot(driver, context, rest):
    source = created_volume(driver, context)
    target = new_volume(context, size=1)

    update = driver.create_cloned_volume(target, source)

    clone = rest.get_share(update["provider_id"])
    assert clone["volume"]["name"] == target.name
    assert rest.list_snapshots(source.provider_id) == []
    driver.delete_volume(source)  # the clone does not pin its source
    assert rest.get_share(update["provider_id"])["state"] == "available"


def test_failed_clone_cleans_up_its_temporary_snapshot(driver, context, rest):
    source = created_volume(driver, context)
    target = new_volume(context)
    rest.create_share(target.name, GIB)  # the clone's share name is taken: the clone fails

    with pytest.raises(exception.VolumeBackendAPIException, match="name"):
        driver.create_cloned_volume(target, source)
    assert rest.list_snapshots(source.provider_id) == []


def test_concurrent_clones_of_one_volume_all_succeed(driver, context, rest):
    source = created_volume(driver, context)
    targets = [new_volume(context) for _ in range(3)]
    results, errors = {}, []

    def clone(target):
        try:
            results[target.id] = driver.create_cloned_volume(target, source)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=clone, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({update["provider_id"] for update in results.values()}) == 3
    assert rest.list_snapshots(source.provider_id) == []


def test_a_volume_or_snapshot_pinned_by_a_clone_elsewhere_is_busy(driver, context, rest, appliance):
    """A clone this driver did not start (another cinder-volume service, an operator over REST)
    copies a snapshot (no reflinks in this data dir: 384 MiB take seconds).  Meanwhile deleting
    the source volume is VolumeIsBusy and deleting the snapshot SnapshotIsBusy, as Cinder
    expects; nothing is lost, and both deletes succeed once the clone is done.  (Within one
    driver, per-volume locks make such deletes wait for the clone instead.)"""
    source = created_volume(driver, context, size=1)
    chunk = os.urandom(1 << 20)
    with open(next(appliance.data_dir.rglob(source.name)), "r+b") as out:
        for _ in range(384):
            out.write(chunk)
    snapshot = created_snapshot(driver, context, source)
    name = f"elsewhere-{uuid.uuid4().hex[:8]}"
    outcome = {}
    clone = threading.Thread(target=lambda: outcome.update(rest.clone_snapshot(snapshot.provider_id, name)))
    clone.start()
    try:
        while not rest.list_shares(name=name) and clone.is_alive():
            time.sleep(0.01)
        if not clone.is_alive():
            pytest.skip("the clone finished at once (this data dir clones without copying)")
        with pytest.raises(exception.VolumeIsBusy):
            driver.delete_volume(source)
        with pytest.raises(exception.SnapshotIsBusy):
            driver.delete_snapshot(snapshot)
    finally:
        clone.join(120)
    assert rest.get_share(outcome["id"])["state"] == "available"
    assert rest.get_share(source.provider_id)["state"] == "available"
    assert [s["id"] for s in rest.list_snapshots(source.provider_id)] == [snapshot.provider_id]
    driver.delete_snapshot(snapshot)
    driver.delete_volume(source)
    with pytest.raises(ApplianceNotFound):
        rest.get_share(source.provider_id)
    rest.delete_share(outcome["id"])


def test_revert_keeps_the_current_size_and_needs_no_backup_snapshot(driver, context, rest):
    volume = created_volume(driver, context, size=1)
    snapshot = created_snapshot(driver, context, volume)
    driver.extend_volume(volume, 2)
    volume.size = 2

    driver.revert_to_snapshot(context, volume, snapshot)

    share = rest.get_share(volume.provider_id)
    assert share["volume"]["size"] == 2 * GIB
    assert share["volume"]["name"] == volume.name
    assert driver.snapshot_revert_use_temp_snapshot() is False


# -- connections -------------------------------------------------------------------

def connector(ip, host="compute-1"):
    return {"ip": ip, "host": host, "initiator": "iqn.unused"}


def test_initialize_connection_grants_the_connector_and_describes_the_share(driver, context, rest, appliance):
    volume = created_volume(driver, context)

    info = driver.initialize_connection(volume, connector("10.0.0.5"))

    assert info["driver_volume_type"] == "nfs"
    data = info["data"]
    assert data["export"] == volume.provider_location
    assert data["name"] == volume.name
    assert data["format"] == "raw"
    # The appliance serves v4: Nova gets a bare vers=4 (mount.nfs negotiates 4.2 down to 4.0), no nolock.
    assert data["options"] == f"-o vers=4,proto=tcp,port={appliance.nfs_port}"
    assert info["mount_point_base"] == cfg.CONF[BACKEND].nfs_mount_point_base
    access = rest.get_share(volume.provider_id)["access"]
    assert [(rule["client"], rule["access"]) for rule in access] == [("10.0.0.5", "rw")]

    driver.terminate_connection(volume, connector("10.0.0.5"))
    assert rest.get_share(volume.provider_id)["access"] == []


def test_read_only_attachment_gets_a_read_only_rule(driver, context, rest):
    volume = created_volume(driver, context)
    info = driver.initialize_connection(volume, {**connector("10.0.0.8"), "mode": "ro"})
    assert info["data"]["access_mode"] == "ro"
    assert [(rule["client"], rule["access"]) for rule in rest.get_share(volume.provider_id)["access"]] \
        == [("10.0.0.8", "ro")]


def test_initialize_connection_without_ip_is_refused(driver, context):
    volume = created_volume(driver, context)
    with pytest.raises(exception.InvalidConnectorException):
        driver.initialize_connection(volume, {"host": "compute-1"})


def test_force_detach_removes_every_rule(driver, context, rest):
    volume = created_volume(driver, context)
    driver.initialize_connection(volume, connector("10.0.0.5"))
    driver.initialize_connection(volume, connector("10.0.0.6", host="compute-2"))

    driver.terminate_connection(volume, None)

    assert rest.get_share(volume.provider_id)["access"] == []


def test_second_attachment_from_same_host_keeps_access(driver, context, rest):
    volume = created_volume(driver, context)
    driver.initialize_connection(volume, connector("10.0.0.7"))
    attachments = [fake_volume.volume_attachment_ovo(context, id=str(uuid.uuid4()), volume_id=volume.id,
                                                     attach_status="attached",
                                                     connector=json.dumps(connector("10.0.0.7")))
                   for _ in range(2)]
    volume.volume_attachment = objects.VolumeAttachmentList(objects=attachments)

    driver.terminate_connection(volume, connector("10.0.0.7"))
    assert [rule["client"] for rule in rest.get_share(volume.provider_id)["access"]] == ["10.0.0.7"]

    volume.volume_attachment = objects.VolumeAttachmentList(objects=attachments[:1])
    driver.terminate_connection(volume, connector("10.0.0.7"))
    assert rest.get_share(volume.provider_id)["access"] == []


def test_exports_are_no_ops_on_the_appliance(driver, context, rest):
    volume = created_volume(driver, context)
    before = rest.get_share(volume.provider_id)
    assert driver.create_export(context, volume, connector("10.0.0.5")) is None
    assert driver.ensure_export(context, volume) is None
    assert driver.remove_export(context, volume) is None
    assert rest.get_share(volume.provider_id) == before


# -- stats -------------------------------------------------------------------------

def test_volume_stats_report_the_pool(driver, rest):
    pool = rest.pool()
    stats = driver.get_volume_stats(refresh=True)

    assert stats["volume_backend_name"] == BACKEND
    assert stats["storage_protocol"] == "NFS"
    assert stats["vendor_name"] == "ACME"
    assert stats["driver_version"] == driver.VERSION
    [pool_stats] = stats["pools"]
    assert pool_stats["pool_name"] == BACKEND
    assert pool_stats["total_capacity_gb"] == round(pool["total_bytes"] / GIB, 2)
    assert pool_stats["thin_provisioning_support"] is True
    assert pool_stats["multiattach"] is True
    assert pool_stats["online_extend_support"] is True
    assert pool_stats["reserved_percentage"] == 0
    assert pool_stats["max_over_subscription_ratio"] == 20.0
    assert "provisioned_capacity_gb" in pool_stats


# -- manage / unmanage -------------------------------------------------------------

def test_manage_existing_by_name_path_or_id(driver, context, rest):
    shares = [rest.create_share(f"legacy-{uuid.uuid4().hex[:8]}", 2 * GIB,
                                volume={"name": "disk.img"}) for _ in range(3)]
    references = [{"source-name": shares[0]["name"]}, {"source-name": shares[1]["export_path"]},
                  {"source-id": shares[2]["id"]}]
    for share, reference in zip(shares, references):
        volume = new_volume(context, size=2)
        assert driver.manage_existing_get_size(volume, reference) == 2
        update = driver.manage_existing(volume, reference)
        assert update["provider_id"] == share["id"]
        assert rest.get_share(share["id"])["volume"]["name"] == volume.name


def test_manage_existing_rounds_odd_sizes_up(driver, context, rest):
    share = rest.create_share(f"odd-{uuid.uuid4().hex[:8]}", GIB + GIB // 2,
                              volume={"name": "odd.img"})
    volume = new_volume(context, size=2)
    reference = {"source-id": share["id"]}

    assert driver.manage_existing_get_size(volume, reference) == 2
    driver.manage_existing(volume, reference)
    assert rest.get_share(share["id"])["volume"]["size"] == 2 * GIB


def test_manage_existing_refuses_bad_references(driver, context, rest):
    empty = rest.create_share(f"empty-{uuid.uuid4().hex[:8]}", GIB)
    volume = new_volume(context)
    for reference in ({}, {"source-name": "no-such-share"}, {"source-id": str(uuid.uuid4())},
                      {"source-id": empty["id"]}):
        with pytest.raises(exception.ManageExistingInvalidReference):
            driver.manage_existing_get_size(volume, reference)


def test_manageable_volumes_list_marks_managed_ones(driver, context, rest):
    managed = created_volume(driver, context)
    loose = rest.create_share(f"loose-{uuid.uuid4().hex[:8]}", GIB, volume={"name": "x.img"})

    entries = driver.get_manageable_volumes([managed], None, 1000, 0, ["size"], ["asc"])

    by_id = {entry["reference"]["source-id"]: entry for entry in entries}
    assert by_id[managed.provider_id]["safe_to_manage"] is False
    assert by_id[managed.provider_id]["cinder_id"] == managed.id
    assert by_id[loose["id"]]["safe_to_manage"] is True
    driver.unmanage(managed)
    assert rest.get_share(managed.provider_id)["state"] == "available"


def test_manage_existing_snapshot(driver, context, rest):
    volume = created_volume(driver, context)
    found = rest.create_snapshot(volume.provider_id, "external")
    snapshot = new_snapshot(context, volume)

    assert driver.manage_existing_snapshot_get_size(snapshot, {"source-name": "external"}) == 1
    assert driver.manage_existing_snapshot(snapshot, {"source-name": "external"}) == {"provider_id": found["id"]}


def test_update_migrated_volume_renames_the_file(driver, context, rest):
    original = new_volume(context)
    migrated = created_volume(driver, context)

    update = driver.update_migrated_volume(context, original, migrated, "available")

    # provider_id moves with Volume.finish_volume_migration's swap; in the update it would swap twice
    assert update == {"_name_id": None, "provider_location": migrated.provider_location}
    assert rest.get_share(migrated.provider_id)["volume"]["name"] == original.name


def test_update_migrated_volume_renames_to_the_id_not_an_older_name_id(driver, context, rest):
    """A volume migrated before while attached has a _name_id; with the rename it is
    dropped, so the file must be named after the volume's id."""
    original = new_volume(context, _name_id=str(uuid.uuid4()))
    migrated = created_volume(driver, context)

    update = driver.update_migrated_volume(context, original, migrated, "available")

    assert update["_name_id"] is None
    assert rest.get_share(migrated.provider_id)["volume"]["name"] == f"volume-{original.id}"


def test_update_migrated_volume_of_an_attached_volume_keeps_the_new_name(driver, context, rest):
    original = new_volume(context)
    migrated = created_volume(driver, context)

    update = driver.update_migrated_volume(context, original, migrated, "in-use")

    assert update == {"_name_id": migrated.id, "provider_location": migrated.provider_location}
    assert rest.get_share(migrated.provider_id)["volume"]["name"] == migrated.name


def test_a_volume_without_provider_id_is_found_by_its_location(driver, context, rest):
    """provider_location (host:/export) names the share too; the name is the last resort."""
    created = created_volume(driver, context)
    other_name = new_volume(context)
    other_name.provider_location = created.provider_location

    driver.extend_volume(other_name, 2)

    assert rest.get_share(created.provider_id)["size"] == 2 * GIB


# -- setup errors ------------------------------------------------------------------

def test_setup_with_a_wrong_token_says_so(cinder_conf, appliance):
    driver = make_driver(fresh_group(), setup=False, acmenfs_api_url=appliance.url,
                         acmenfs_api_token="not-the-token")
    with pytest.raises(exception.VolumeBackendAPIException, match="refused the API token"):
        driver.do_setup(None)


def test_setup_with_an_unreachable_appliance_says_so(cinder_conf):
    url = f"http://127.0.0.1:{free_port()}"
    driver = make_driver(fresh_group(), setup=False, acmenfs_api_url=url, acmenfs_api_token="x")
    with pytest.raises(exception.VolumeBackendAPIException, match="cannot reach the appliance"):
        driver.do_setup(None)


def test_setup_with_a_url_that_is_not_an_appliance_says_so(cinder_conf, appliance):
    driver = make_driver(fresh_group(), setup=False, acmenfs_api_url=f"{appliance.url}/not-here",
                         acmenfs_api_token=appliance.token)
    with pytest.raises(exception.VolumeBackendAPIException, match="does not answer like an acmenfs"):
        driver.do_setup(None)


def test_setup_without_url_or_token_names_the_option(cinder_conf, appliance):
    no_url = make_driver(fresh_group(), setup=False, acmenfs_api_token="x")
    with pytest.raises(exception.InvalidConfigurationValue, match="acmenfs_api_url"):
        no_url.do_setup(None)
    no_token = make_driver(fresh_group(), setup=False, acmenfs_api_url=appliance.url)
    with pytest.raises(exception.InvalidConfigurationValue, match="acmenfs_api_token"):
        no_token.do_setup(None)


def test_check_for_setup_error_passes_on_a_good_appliance(driver):
    driver.check_for_setup_error()


def test_driver_options_are_oslo_options_with_help():
    names = {option.name for option in options.driver_options()}
    assert {"acmenfs_api_url", "acmenfs_api_token", "acmenfs_api_verify_tls", "acmenfs_api_ca_file",
            "acmenfs_nfs_address", "acmenfs_data_path", "nfs_sparsed_volumes", "nfs_mount_point_base",
            "nfs_mount_options", "nfs_mount_attempts", "nas_secure_file_operations",
            "nas_secure_file_permissions"} <= names
    assert all(option.help for option in options.driver_options())
    [(group, listed)] = options.list_opts()
    assert group == "backend_defaults"
    assert {option.name for option in listed} == {option.name for option in options.acmenfs_opts}
    from cinder.volume.drivers import nfs as cinder_nfs

    reused = {option.name: option for option in options.reused_cinder_opts}
    assert reused["nfs_mount_attempts"] is next(o for o in cinder_nfs.nfs_opts if o.name == "nfs_mount_attempts")
