"""``acmenfs_volume_owner``: volume files owned by qemu's uid:gid, against a live appliance.

With ``nas_secure_file_operations`` on, Nova hosts get root-squashed access and
volume files are 0660, so a root-owned file cannot be opened by qemu. These
tests check that every path that makes or adopts a volume file (create, from
snapshot, clone, manage_existing) leaves it owned as configured, both in the
REST answer and on disk in the appliance's data dir; that the default stays
root with a warning when that cannot work; that a bad value stops do_setup
with a message naming the option and the syntax; and, over real NFS, that a
root-squashed client reaches the owned file as qemu's uid but not as root.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from cinder import exception
from cinder.tests.unit import fake_snapshot, fake_volume

from acmenfs.cinder import options
from acmenfs.cinder.driver import parse_volume_owner
from acmenfs.nfs3.client import NfsClient, NfsError
from conftest import fresh_group, make_driver, require_nfs

GIB = 1024 ** 3
QEMU = (64055, 64055)


def appliance_driver(appliance, **overrides):
    """A set-up driver for a fresh backend section on the session's appliance."""
    return make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                       **overrides)


def owned_driver(appliance, owner: str = "64055:64055", **overrides):
    return appliance_driver(appliance, acmenfs_volume_owner=owner, **overrides)


def new_volume(context, size=1):
    return fake_volume.fake_volume_obj(context, id=str(uuid.uuid4()), size=size,
                                       provider_location=None, provider_id=None)


def created_volume(driver, context, size=1):
    volume = new_volume(context, size)
    volume.update(driver.create_volume(volume))
    return volume


def owner_of(appliance, rest, volume) -> tuple[tuple[int, int], tuple[int, int]]:
    """(uid, gid) as the REST answer reports it, and as the file on disk has it."""
    share = rest.get_share(volume.provider_id)
    on_disk = os.stat(appliance.data_dir / "shares" / share["id"] / share["volume"]["name"])
    return (share["volume"]["uid"], share["volume"]["gid"]), (on_disk.st_uid, on_disk.st_gid)


# -- option parsing and setup -------------------------------------------------------

@pytest.mark.parametrize("text, owner", [("", None), (None, None), ("  ", None), ("64055:64055", QEMU),
                                         ("0:0", (0, 0)), (" 107:112 ", (107, 112))])
def test_owner_option_values(text, owner):
    assert parse_volume_owner(text) == owner


@pytest.mark.parametrize("text", ["qemu", "64055", "qemu:kvm", "-1:0", "1:2:3", "4294967295:0", "1:",
                                  ":1", "1.5:2", "١:٢"])
def test_bad_owner_option_values_name_option_and_syntax(text):
    with pytest.raises(exception.InvalidConfigurationValue) as refused:
        parse_volume_owner(text)
    assert "acmenfs_volume_owner" in str(refused.value)
    assert "UID:GID" in str(refused.value)


def test_setup_with_a_bad_owner_fails_clearly(cinder_conf, appliance):
    driver = make_driver(fresh_group(), setup=False, acmenfs_volume_owner="libvirt-qemu",
                         acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token)
    with pytest.raises(exception.InvalidConfigurationValue,
                       match=r"libvirt-qemu.*acmenfs_volume_owner|acmenfs_volume_owner.*libvirt-qemu"):
        driver.do_setup(None)


def test_owner_option_is_registered_with_help():
    [option] = [option for option in options.acmenfs_opts if option.name == "acmenfs_volume_owner"]
    assert option.default == ""
    assert "64055:64055" in option.help and "nas_secure_file_operations" in option.help


def test_secure_operations_without_owner_warn_at_setup(cinder_conf, appliance, caplog):
    with caplog.at_level(logging.WARNING, logger="acmenfs.cinder.driver"):
        appliance_driver(appliance, nas_secure_file_operations="auto")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("acmenfs_volume_owner" in text and "will not be able to open" in text for text in warnings), warnings


@pytest.mark.parametrize("overrides", [{"nas_secure_file_operations": "false"},
                                       {"nas_secure_file_operations": "true", "acmenfs_volume_owner": "1:1"}])
def test_no_warning_when_root_squash_is_off_or_an_owner_is_set(cinder_conf, appliance, caplog, overrides):
    with caplog.at_level(logging.WARNING, logger="acmenfs.cinder.driver"):
        appliance_driver(appliance, **overrides)
    assert not [record for record in caplog.records if "acmenfs_volume_owner" in record.getMessage()]


# -- every path that makes or adopts a volume file ------------------------------------

def test_default_owner_stays_root(driver, context, rest, appliance):
    volume = created_volume(driver, context)
    reported, on_disk = owner_of(appliance, rest, volume)
    assert reported == on_disk == (0, 0)


def test_create_volume_owns_the_file(cinder_conf, context, rest, appliance):
    driver = owned_driver(appliance)
    volume = created_volume(driver, context, size=2)
    reported, on_disk = owner_of(appliance, rest, volume)
    assert reported == on_disk == QEMU
    assert rest.get_share(volume.provider_id)["volume"]["mode"] == "0660"


def test_volume_from_snapshot_and_clone_are_owned(cinder_conf, context, rest, appliance):
    root_driver = appliance_driver(appliance)
    source = created_volume(root_driver, context)  # root-owned: the clones must be chowned
    snapshot = fake_snapshot.fake_snapshot_obj(context, id=str(uuid.uuid4()), volume=source,
                                               volume_id=source.id, volume_size=source.size, provider_id=None)
    snapshot.update(root_driver.create_snapshot(snapshot))

    driver = owned_driver(appliance, "107:112")
    from_snapshot = new_volume(context, size=2)
    from_snapshot.update(driver.create_volume_from_snapshot(from_snapshot, snapshot))
    cloned = new_volume(context, size=1)
    cloned.update(driver.create_cloned_volume(cloned, source))

    for volume in (from_snapshot, cloned):
        reported, on_disk = owner_of(appliance, rest, volume)
        assert reported == on_disk == (107, 112)
    assert owner_of(appliance, rest, source) == ((0, 0), (0, 0))  # the source is left alone
    assert rest.get_share(from_snapshot.provider_id)["volume"]["size"] == 2 * GIB


def test_manage_existing_chowns_the_adopted_file(cinder_conf, context, rest, appliance):
    share = rest.create_share(f"legacy-{uuid.uuid4().hex[:8]}", GIB, volume={"name": "disk.img"})
    assert share["volume"]["uid"] == 0
    volume = new_volume(context)
    volume.update(owned_driver(appliance).manage_existing(volume, {"source-id": share["id"]}))
    reported, on_disk = owner_of(appliance, rest, volume)
    assert reported == on_disk == QEMU
    assert rest.get_share(share["id"])["volume"]["name"] == volume.name


# -- what the owner is for: a root-squashed client -------------------------------------

def test_root_squashed_client_opens_the_file_as_qemu_not_as_root(cinder_conf, context, rest, appliance):
    require_nfs(appliance)
    driver = owned_driver(appliance, nas_secure_file_operations="true")
    volume = created_volume(driver, context)
    connector = {"ip": "127.0.0.1", "host": "compute-1", "initiator": None}
    driver.initialize_connection(volume, connector)
    try:
        share = rest.get_share(volume.provider_id)
        assert [rule["squash"] for rule in share["access"]] == ["root"]
        with NfsClient("127.0.0.1", appliance.nfs_port, appliance.mount_port, uid=QEMU[0], gid=QEMU[1]) as qemu:
            fh = qemu.lookup(qemu.mount(share["export_path"]), volume.name)
            attributes = qemu.getattr(fh)
            assert (attributes.uid, attributes.gid) == QEMU
            data, _ = qemu.read(fh, 0, 4096)
            assert data == bytes(4096)
        with NfsClient("127.0.0.1", appliance.nfs_port, appliance.mount_port, uid=0, gid=0) as root:
            fh = root.lookup(root.mount(share["export_path"]), volume.name)
            with pytest.raises(NfsError):
                root.read(fh, 0, 4096)
    finally:
        driver.terminate_connection(volume, connector)


def test_open_mode_without_owner_warns_that_only_0666_makes_it_work(cinder_conf, appliance, caplog):
    with caplog.at_level(logging.WARNING, logger="acmenfs.cinder.driver"):
        appliance_driver(appliance, nas_secure_file_operations="true", nas_secure_file_permissions="false")
    warnings = [record.getMessage() for record in caplog.records if "acmenfs_volume_owner" in record.getMessage()]
    assert len(warnings) == 1 and "world-writable (0666)" in warnings[0], warnings
