"""The NFS version the driver mounts with (``acmenfs_nfs_version``, ``nfs_version``).

Real parts: the appliance (``acmenfs serve``, which serves NFSv3 and v4.0-4.2,
or ``--no-nfs``), Cinder's configuration and driver loading, os-brick's
``RemoteFsClient`` and ``RemoteFsConnector`` (what cinder-backup and local
attaches use), and libnfs's ``nfs-ls`` speaking NFSv4 to the appliance. The
only fake is the ``mount`` command (no kernel NFS client here): the recording
executor of ``test_cinder_datapath``, which can fail a mount with the stderr
mount.nfs prints when a version is refused.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest

from cinder import exception
from os_brick.initiator.connectors import remotefs as remotefs_connector

from acmenfs.cinder import nfs_version
from conftest import make_driver, fresh_group, require_nfs, start_appliance, stop_appliance
from test_cinder_datapath import FileImageService, RecordingExecutor, image_bytes, mount_driver
from test_cinder_driver import created_volume

PROTOCOL_NOT_SUPPORTED = "mount.nfs: Protocol not supported"


def mount_options_of(command: tuple[str, ...]) -> list[list[str]]:
    """Every ``-o`` of one recorded mount command, split."""
    return [command[index + 1].split(",") for index, part in enumerate(command) if part == "-o"]


def copy_an_image(driver, context):
    volume = created_volume(driver, context, size=1)
    images = FileImageService()
    driver.copy_image_to_volume(context, volume, images, images.add(image_bytes()), disable_sparse=False)
    return volume


@pytest.fixture(scope="module")
def appliance_without_nfs(tmp_path_factory):
    """An appliance that serves no NFS at all (``--no-nfs``): it lists no v4."""
    found = start_appliance(tmp_path_factory.mktemp("no-nfs"), ["--no-nfs"])
    yield found
    stop_appliance(found)


# -- auto against the real appliance ------------------------------------------------------

def test_the_appliance_says_it_serves_v4(cinder_conf, appliance, rest):
    require_nfs(appliance)
    assert rest.version()["nfs_versions"] == ["3", "4.0", "4.1", "4.2"]


def test_auto_mounts_v42_without_nolock(cinder_conf, appliance, mount_base, context):
    require_nfs(appliance)
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor)
    copy_an_image(driver, context)
    [mount] = executor.named("mount")
    assert mount_options_of(mount) == [["vers=4.2", "proto=tcp", f"port={appliance.nfs_port}"]]


def test_auto_falls_back_to_v41_when_mount_refuses_42_and_stays_there(cinder_conf, appliance, mount_base,
                                                                      context, caplog):
    require_nfs(appliance)
    executor = RecordingExecutor(refuse={"vers=4.2": PROTOCOL_NOT_SUPPORTED})
    driver = mount_driver(cinder_conf, appliance, mount_base, executor, nfs_mount_attempts=1)
    with caplog.at_level(logging.WARNING):
        copy_an_image(driver, context)
        copy_an_image(driver, context)
    versions = [mount_options_of(command)[0][0] for command in executor.named("mount")]
    # One refusal, then 4.1 for this mount and every later one; no retry was used up.
    assert versions == ["vers=4.2", "vers=4.1", "vers=4.1"]
    assert "nolock" not in str(executor.named("mount"))
    assert any("refused its NFS version" in record.getMessage() for record in caplog.records)


def test_a_failure_that_is_not_about_the_version_is_retried_not_downgraded(cinder_conf, appliance, mount_base,
                                                                           context):
    require_nfs(appliance)
    executor = RecordingExecutor(fail_mounts=1)  # "mount.nfs: Connection refused" once
    driver = mount_driver(cinder_conf, appliance, mount_base, executor)
    driver._mounts._retry_delay = 0
    copy_an_image(driver, context)
    versions = [mount_options_of(command)[0][0] for command in executor.named("mount")]
    assert versions == ["vers=4.2", "vers=4.2"]


def test_v41_refused_too_fails_with_both_errors_seen(cinder_conf, appliance, mount_base, context):
    require_nfs(appliance)
    executor = RecordingExecutor(refuse={"vers=4.2": PROTOCOL_NOT_SUPPORTED,
                                         "vers=4.1": PROTOCOL_NOT_SUPPORTED})
    driver = mount_driver(cinder_conf, appliance, mount_base, executor, nfs_mount_attempts=1)
    with pytest.raises(Exception, match="Protocol not supported"):
        copy_an_image(driver, context)
    versions = [mount_options_of(command)[0][0] for command in executor.named("mount")]
    assert versions == ["vers=4.2", "vers=4.1"]  # never down to v3 without being told


def test_connection_info_gives_nova_a_negotiated_v4(cinder_conf, appliance, context):
    require_nfs(appliance)
    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                         acmenfs_data_path="userspace")
    volume = created_volume(driver, context)
    data = driver.initialize_connection(volume, {"ip": "10.0.0.9", "host": "compute-9"})["data"]
    assert data["options"] == f"-o vers=4,proto=tcp,port={appliance.nfs_port}"


def test_os_brick_connector_mounts_v4_with_the_connection_info(cinder_conf, appliance, context, tmp_path):
    """What cinder-backup and local attaches do with the connection info (os-brick's
    RemoteFsConnector): its own 4.2 / 4.1 / default attempts, each carrying our -o."""
    require_nfs(appliance)
    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                         acmenfs_data_path="userspace")
    volume = created_volume(driver, context)
    info = driver.initialize_connection(volume, {"ip": "10.0.0.10", "host": "compute-10"})
    info["mount_point_base"] = str(tmp_path / "brick")
    executor = RecordingExecutor(refuse={"minorversion=2": PROTOCOL_NOT_SUPPORTED})
    connector = remotefs_connector.RemoteFsConnector("nfs", "sudo", execute=executor, conn=info)
    path = connector.connect_volume(info["data"])["path"]
    assert path.endswith("/" + volume.name)
    mounts = executor.named("mount")
    assert [mount_options_of(command) for command in mounts] == [
        [["vers=4", "minorversion=2"], ["vers=4", "proto=tcp", f"port={appliance.nfs_port}"]],
        [["vers=4", "minorversion=1"], ["vers=4", "proto=tcp", f"port={appliance.nfs_port}"]],
    ]
    assert all(command[-2] == volume.provider_location for command in mounts)


# -- appliances without v4 -------------------------------------------------------------------

def test_an_appliance_without_v4_gets_v3_with_nolock(cinder_conf, appliance_without_nfs, mount_base, context):
    assert appliance_without_nfs.nfs_port is None
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance_without_nfs, mount_base, executor)
    assert driver._served_nfs_versions() == []
    assert driver._mounts.option_sets == [driver._mounts.mount_options]
    options = driver._mounts.mount_options.split(",")
    assert options[:2] == ["vers=3", "proto=tcp"] and "nolock" in options
    volume = created_volume(driver, context)
    data = driver.initialize_connection(volume, {"ip": "10.0.0.11", "host": "compute-11"})["data"]
    assert data["options"].startswith("-o vers=3,proto=tcp,nolock,")


def test_do_setup_asks_the_appliance_again(cinder_conf, appliance, appliance_without_nfs, mount_base):
    """The versions are cached per driver and refreshed by do_setup (here: the backend is
    pointed at another appliance and set up again)."""
    from cinder import context as cinder_context
    from oslo_config import cfg

    require_nfs(appliance)
    driver = mount_driver(cinder_conf, appliance_without_nfs, mount_base, RecordingExecutor())
    assert driver._version_choice.host_versions == ("3",)
    group = driver.configuration.config_group
    cfg.CONF.set_override("acmenfs_api_url", appliance.url, group=group)
    cfg.CONF.set_override("acmenfs_api_token", appliance.token, group=group)
    driver.do_setup(cinder_context.get_admin_context())
    assert driver._version_choice.host_versions == ("4.2", "4.1")
    assert driver._mounts.mount_options.startswith("vers=4.2,")


def test_an_appliance_too_old_to_list_versions_gets_v3():
    choice = nfs_version.choose("auto", None, None)
    assert choice.host_versions == ("3",) and choice.client_version == "3"
    assert "older" in choice.reason
    assert nfs_version.mount_options("3", 2049, 20048) == "vers=3,proto=tcp,nolock,port=2049,mountport=20048"


def test_an_appliance_serving_only_v40_gets_v3():
    assert nfs_version.choose("auto", ["3", "4.0"], None).host_versions == ("3",)
    assert nfs_version.choose("auto", ["3", "4.0", "4.1"], None).host_versions == ("4.1",)


# -- explicit settings ---------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["4.1", "4.0"])
def test_explicit_v4_version_is_used_exactly_without_fallback(cinder_conf, appliance, mount_base, context,
                                                              setting):
    require_nfs(appliance)
    executor = RecordingExecutor(refuse={f"vers={setting}": PROTOCOL_NOT_SUPPORTED})
    driver = mount_driver(cinder_conf, appliance, mount_base, executor, acmenfs_nfs_version=setting,
                          nfs_mount_attempts=1)
    with pytest.raises(Exception, match="Protocol not supported"):
        copy_an_image(driver, context)
    assert [mount_options_of(command) for command in executor.named("mount")] == [
        [[f"vers={setting}", "proto=tcp", f"port={appliance.nfs_port}"]]]
    volume = created_volume(driver, context)
    data = driver.initialize_connection(volume, {"ip": "10.0.0.12", "host": "compute-12"})["data"]
    assert data["options"] == f"-o vers={setting},proto=tcp,port={appliance.nfs_port}"


def test_explicit_v3_overrides_an_appliance_serving_v4(cinder_conf, appliance, mount_base, context):
    require_nfs(appliance)
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor, acmenfs_nfs_version="3")
    copy_an_image(driver, context)
    [mount] = executor.named("mount")
    assert mount_options_of(mount) == [["vers=3", "proto=tcp", "nolock", f"port={appliance.nfs_port}",
                                        f"mountport={appliance.mount_port}"]]


def test_vers_in_nfs_mount_options_wins(cinder_conf, appliance, mount_base, context):
    require_nfs(appliance)
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor, acmenfs_nfs_version="4.2",
                          nfs_mount_options="nfsvers=4.1,timeo=600")
    copy_an_image(driver, context)
    [mount] = executor.named("mount")
    assert mount_options_of(mount) == [["proto=tcp", f"port={appliance.nfs_port}", "nfsvers=4.1", "timeo=600"]]
    volume = created_volume(driver, context)
    data = driver.initialize_connection(volume, {"ip": "10.0.0.13", "host": "compute-13"})["data"]
    assert data["options"] == f"-o proto=tcp,port={appliance.nfs_port},nfsvers=4.1,timeo=600"


def test_nolock_forced_on_v4_is_warned_about(cinder_conf, appliance, mount_base, caplog):
    require_nfs(appliance)
    with caplog.at_level(logging.WARNING):
        mount_driver(cinder_conf, appliance, mount_base, RecordingExecutor(), nfs_mount_options="nolock")
    assert any("keeps byte-range locks local" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("bad", ["4", "5", "4.3", "v4.1", "nfs4", "auto,3"])
def test_unknown_nfs_version_setting_fails_do_setup_clearly(cinder_conf, appliance, bad):
    with pytest.raises(exception.InvalidConfigurationValue) as failure:
        make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                    acmenfs_nfs_version=bad)
    message = str(failure.value)
    assert "acmenfs_nfs_version" in message and repr(bad) in message
    assert "auto, 3, 4.0, 4.1, 4.2" in message


def test_setting_parsing():
    assert [nfs_version.parse_setting(text) for text in (None, "", " AUTO ", "4.2", "3")] == \
        ["auto", "auto", "auto", "4.2", "3"]


@pytest.mark.parametrize(("extra", "found"), [
    ("vers=4.2", "4.2"), ("nfsvers=3,timeo=600", "3"), ("v4.1", "4.1"), ("v3,soft", "3"),
    ("vers=4,minorversion=1", "4.1"), ("minorversion=2", "4.2"), ("vers=3,vers=4.1", "4.1"),
    ("timeo=600,nolock", None), (None, None), ("", None), ("vers", None)])
def test_operator_version_in_nfs_mount_options(extra, found):
    assert nfs_version.operator_version(extra) == found


@pytest.mark.parametrize(("stderr", "refused"), [
    ("mount.nfs: Protocol not supported", True),
    ("mount.nfs: requested NFS version or transport protocol is not supported", True),
    ("mount.nfs: an incorrect mount option was specified", True),
    ("mount.nfs: Connection refused", False),
    ("mount.nfs: access denied by server while mounting 10.0.0.1:/shares/x", False),
    ("mount.nfs: No such file or directory", False)])
def test_which_mount_failures_mean_the_version(stderr, refused):
    from oslo_concurrency import processutils

    error = processutils.ProcessExecutionError(exit_code=32, stderr=stderr, cmd="mount -t nfs ...")
    assert nfs_version.refuses_version(error) is refused


# -- end to end: a v4 client lists the share path the driver hands out ---------------------

@pytest.mark.skipif(shutil.which("nfs-ls") is None, reason="libnfs-utils (nfs-ls) is not installed")
def test_libnfs_v4_lists_the_exported_share_path(cinder_conf, appliance, context):
    require_nfs(appliance)
    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                         acmenfs_data_path="userspace")
    volume = created_volume(driver, context)
    data = driver.initialize_connection(volume, {"ip": "127.0.0.1", "host": "compute-local"})["data"]
    host, path = data["export"].split(":", 1)
    assert path.startswith("/shares/")
    port = data["options"].split("port=")[1].split(",")[0]
    try:
        listing = subprocess.run(["nfs-ls", f"nfs://{host}{path}?version=4&nfsport={port}"],
                                 capture_output=True, text=True, timeout=60)
    finally:
        driver.terminate_connection(volume, {"ip": "127.0.0.1", "host": "compute-local"})
    assert listing.returncode == 0, listing.stderr
    assert volume.name in listing.stdout.split(), listing.stdout
