"""Strict conformance: every method of Cinder's volume-driver interfaces exists on
AcmeNfsDriver with a compatible signature (names, kinds and defaults of parameters).

Cinder's own ``__subclasshook__`` only checks names; this checks signatures too,
looking through decorators (``coordination.synchronized`` keeps ``__wrapped__``).
"""

from __future__ import annotations

import inspect

import pytest

from cinder import interface
from cinder.interface import volume_driver, volume_manageable_driver, volume_snapshot_revert
from cinder.interface import volume_snapshotmanagement_driver
from cinder.volume import driver as cinder_driver

from acmenfs.cinder.driver import AcmeNfsDriver

INTERFACES = [
    volume_driver.VolumeDriverCore,
    volume_manageable_driver.VolumeManagementDriver,
    volume_manageable_driver.VolumeListManageableDriver,
    volume_snapshot_revert.VolumeSnapshotRevertDriver,
    volume_snapshotmanagement_driver.VolumeSnapshotManagementDriver,
]


def interface_methods():
    for interface_class in INTERFACES:
        for name, method in inspect.getmembers(interface_class, inspect.isfunction):
            if not name.startswith("_") or name == "_init_vendor_properties":
                yield pytest.param(interface_class, name, method, id=f"{interface_class.__name__}.{name}")


def parameters_of(function):
    signature = inspect.signature(inspect.unwrap(function))
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("interface_class", "name", "interface_method"), list(interface_methods()))
def test_driver_method_matches_interface_signature(interface_class, name, interface_method):
    implementation = getattr(AcmeNfsDriver, name, None)
    assert implementation is not None, f"AcmeNfsDriver lacks {interface_class.__name__}.{name}"
    if isinstance(implementation, property):
        # The interface spells ``initialized``/``supported`` as methods but Cinder's
        # own BaseVD (and its manager) use them as properties: accept exactly those.
        assert isinstance(getattr(cinder_driver.BaseVD, name, None), property), name
        return
    assert callable(implementation)
    expected = parameters_of(interface_method)
    found = parameters_of(implementation)
    # The driver may accept more (``**kwargs`` or extra defaulted parameters), never less.
    assert found[:len(expected)] == expected, f"{name}: interface {expected} vs driver {found}"
    for extra_name, kind, default in found[len(expected):]:
        assert kind == inspect.Parameter.VAR_KEYWORD or default is not inspect.Parameter.empty, \
            f"{name}: extra parameter {extra_name} must be optional"


@pytest.mark.parametrize("interface_class", INTERFACES, ids=lambda cls: cls.__name__)
def test_cinder_recognises_the_driver_as_implementing(interface_class):
    assert issubclass(AcmeNfsDriver, interface_class)


def test_driver_is_registered_and_concrete():
    assert AcmeNfsDriver in interface._volume_register
    assert issubclass(AcmeNfsDriver, cinder_driver.VolumeDriver)
    assert not getattr(AcmeNfsDriver, "__abstractmethods__", None)
    assert AcmeNfsDriver.SUPPORTS_ACTIVE_ACTIVE is True


def test_copy_image_to_volume_keeps_the_disable_sparse_keyword():
    parameter = inspect.signature(AcmeNfsDriver.copy_image_to_volume).parameters["disable_sparse"]
    assert parameter.default is False
    assert parameter.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_cinder_driver_info_reads_the_driver():
    from cinder.interface.util import DriverInfo

    info = DriverInfo(AcmeNfsDriver)
    assert info.version == AcmeNfsDriver.VERSION
    assert {option.name for option in info.driver_options} >= {"acmenfs_api_url", "nfs_mount_attempts"}


def test_driver_imports_nothing_cinder_volume_lacks():
    """In a fresh interpreter, loading the driver must not pull the appliance's stack."""
    import subprocess
    import sys

    probe = ("import os; os.environ['OS_CINDER_DISABLE_EVENTLET_PATCHING'] = 'true'\n"
             "from cinder import monkey_patch; monkey_patch.patch()\n"
             "import sys, acmenfs.cinder.driver\n"
             "print(sorted(m for m in ('fastapi', 'uvicorn', 'prometheus_client', 'uvloop', 'httpx',"
             " 'starlette', 'pydantic', 'acmenfs.appliance') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
