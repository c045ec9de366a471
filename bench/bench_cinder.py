"""Benchmark: Cinder driver control-path latency against the raw REST calls.

Owns: starting a throwaway appliance on loopback, timing create-volume (10 GiB),
snapshot and clone three ways in the same run — the raw REST calls (baseline),
through ``AcmeNfsDriver``, and through Cinder's ``VolumeManager`` — and printing
medians of N runs with ratios to the baseline. Must not assert anything: it
reports.

Run in the Cinder venv (``scripts/cinder-venv.sh /work/venv-cinder``):
    /work/venv-cinder/bin/python bench/bench_cinder.py [--runs 20]
The appliance executable comes from ``$ACMENFS_BIN`` or PATH, as in the tests.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OS_CINDER_DISABLE_EVENTLET_PATCHING", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "cinder"))

import conftest as harness  # noqa: E402 - the test harness: appliance + Cinder config

from cinder import context as cinder_context  # noqa: E402
from cinder import objects  # noqa: E402
from cinder.tests.unit import fake_snapshot, fake_volume  # noqa: E402

from acmenfs.cinder.appliance_client import ApplianceClient  # noqa: E402
from acmenfs.nfs3.client import NfsClient  # noqa: E402
from test_cinder_datapath import FileImageService  # noqa: E402 - Glance stand-in of the tests

GIB = 1024 ** 3
MIB = 1024 ** 2
VOLUME_GIB = 10


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


class RestCycle:
    """Baseline: the REST calls the driver makes, issued directly."""

    def __init__(self, client: ApplianceClient) -> None:
        self.client = client

    def run(self) -> dict[str, float]:
        name = f"volume-{uuid.uuid4()}"
        times, result = {}, {}

        def create():
            result["share"] = self.client.create_share(name, VOLUME_GIB * GIB,
                                                       volume={"name": name, "sparse": True, "mode": "0660"})

        def snapshot():
            result["snapshot"] = self.client.create_snapshot(result["share"]["id"], f"snapshot-{uuid.uuid4()}")

        def clone():  # what create_cloned_volume does: snapshot, clone, drop the snapshot
            clone_name = f"volume-{uuid.uuid4()}"
            temporary = self.client.create_snapshot(result["share"]["id"], f"clone-source-{uuid.uuid4()}")
            result["clone"] = self.client.clone_snapshot(temporary["id"], clone_name, size=VOLUME_GIB * GIB,
                                                         volume_name=clone_name)
            self.client.delete_snapshot(temporary["id"])

        times["create volume"] = timed(create)
        times["snapshot"] = timed(snapshot)
        times["clone volume"] = timed(clone)
        self.client.delete_share(result["clone"]["id"], cascade=True)
        self.client.delete_share(result["share"]["id"], cascade=True)
        return times


class DriverCycle:
    def __init__(self, driver, context) -> None:
        self.driver = driver
        self.context = context

    def run(self) -> dict[str, float]:
        volume = fake_volume.fake_volume_obj(self.context, id=str(uuid.uuid4()), size=VOLUME_GIB,
                                             provider_location=None, provider_id=None)
        snapshot = fake_snapshot.fake_snapshot_obj(self.context, id=str(uuid.uuid4()), volume=volume,
                                                   volume_id=volume.id, volume_size=VOLUME_GIB, provider_id=None)
        clone = fake_volume.fake_volume_obj(self.context, id=str(uuid.uuid4()), size=VOLUME_GIB,
                                            provider_location=None, provider_id=None)
        times = {
            "create volume": timed(lambda: volume.update(self.driver.create_volume(volume))),
            "snapshot": timed(lambda: snapshot.update(self.driver.create_snapshot(snapshot))),
            "clone volume": timed(lambda: clone.update(self.driver.create_cloned_volume(clone, volume))),
        }
        self.driver.delete_volume(clone)
        self.driver.delete_volume(volume)
        return times


class ManagerCycle:
    def __init__(self, manager, context) -> None:
        self.manager = manager
        self.context = context

    def run(self) -> dict[str, float]:
        ctxt = self.context
        volume = harness.db_volume(ctxt, size=VOLUME_GIB)
        times = {"create volume": timed(self.manager.create_volume, ctxt, volume)}
        snapshot = harness.db_snapshot(ctxt, volume)
        times["snapshot"] = timed(self.manager.create_snapshot, ctxt, snapshot)
        clone = harness.db_volume(ctxt, size=VOLUME_GIB, source_volid=volume.id)
        times["clone volume"] = timed(self.manager.create_volume, ctxt, clone,
                                      request_spec=objects.RequestSpec(source_volid=volume.id))
        for created in (volume, clone):
            created.refresh()
            if created.status != "available":
                raise RuntimeError(f"manager left volume {created.id} in status {created.status}")
        snapshot.refresh()
        snapshot.status = "deleting"
        snapshot.save()
        self.manager.delete_snapshot(ctxt, snapshot)
        for created in (clone, volume):
            created.status = "deleting"
            created.save()
            self.manager.delete_volume(ctxt, created)
        return times


class RawNfsUpload:
    """Data baseline: our NFS client writes the image bytes straight into a volume file."""

    def __init__(self, client: ApplianceClient, appliance, data: bytes, io_depth: int) -> None:
        self.client, self.appliance, self.data, self.io_depth = client, appliance, data, io_depth

    def run(self) -> dict[str, float]:
        name = f"volume-{uuid.uuid4()}"
        share = self.client.create_share(name, GIB, volume={"name": name})
        self.client.add_access(share["id"], "127.0.0.1", squash="none")
        start = time.perf_counter()
        with NfsClient("127.0.0.1", self.appliance.nfs_port, self.appliance.mount_port,
                       io_depth=self.io_depth) as nfs:
            fh = nfs.lookup(nfs.mount(share["export_path"]), name)
            nfs.upload(fh, io.BytesIO(self.data), len(self.data))
        elapsed = time.perf_counter() - start
        self.client.delete_share(share["id"], cascade=True)
        return {"image to volume": elapsed}


class DriverImageCopy:
    """copy_image_to_volume through the driver's user-space path (Cinder's fetch_to_raw
    into a staging file, then NFS upload)."""

    def __init__(self, driver, context, data: bytes) -> None:
        self.driver, self.context = driver, context
        self.images = FileImageService()
        self.image_id = self.images.add(data)

    def run(self) -> dict[str, float]:
        volume = fake_volume.fake_volume_obj(self.context, id=str(uuid.uuid4()), size=1,
                                             provider_location=None, provider_id=None)
        volume.update(self.driver.create_volume(volume))
        elapsed = timed(self.driver.copy_image_to_volume, self.context, volume, self.images, self.image_id,
                        disable_sparse=False)
        self.driver.delete_volume(volume)
        return {"image to volume": elapsed}


def interleaved_medians(cycles: dict[str, object], runs: int) -> dict[str, dict[str, float]]:
    """Alternate the three paths run by run so machine noise hits all alike."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in cycles}
    for cycle in cycles.values():
        cycle.run()  # warm-up
    for _ in range(runs):
        for name, cycle in cycles.items():
            for operation, seconds in cycle.run().items():
                samples[name].setdefault(operation, []).append(seconds)
    return {name: {op: statistics.median(values) for op, values in per_op.items()}
            for name, per_op in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per path (median reported)")
    parser.add_argument("--image-mib", type=int, default=128, help="image size for the data-path figure")
    parser.add_argument("--image-runs", type=int, default=5, help="timed image copies per path")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # Cinder's quota notices are not figures

    with tempfile.TemporaryDirectory(prefix="bench-cinder-") as scratch:
        base = Path(scratch)
        (base / "appliance").mkdir()
        (base / "cinder").mkdir()
        appliance = harness.start_appliance(base / "appliance")
        try:
            harness.configure_cinder(base / "cinder", appliance)
            context = cinder_context.RequestContext(user_id="bench", project_id="bench", is_admin=True)
            rest = ApplianceClient(appliance.url, appliance.token)
            driver = harness.make_driver(harness.BACKEND)
            manager = harness.start_volume_manager()
            results = interleaved_medians({"rest": RestCycle(rest), "driver": DriverCycle(driver, context),
                                           "manager": ManagerCycle(manager, context)}, args.runs)
            image = os.urandom(args.image_mib * MIB)  # incompressible, no holes: every byte travels
            data_results = None
            if appliance.nfs_available:
                io_depth = driver.configuration.safe_get("acmenfs_userspace_io_depth")
                data_results = interleaved_medians(
                    {"raw": RawNfsUpload(rest, appliance, image, io_depth),
                     "driver": DriverImageCopy(driver, context, image)}, args.image_runs)
        finally:
            harness.stop_appliance(appliance)

    print(f"acmenfs Cinder driver control path, {VOLUME_GIB} GiB volumes, median of {args.runs} runs "
          f"(interleaved), milliseconds; ratio = path / raw REST")
    header = f"{'operation':<15}{'raw REST':>10}{'driver':>10}{'ratio':>8}{'manager':>10}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for operation in ("create volume", "snapshot", "clone volume"):
        rest_ms = results["rest"][operation] * 1000
        driver_ms = results["driver"][operation] * 1000
        manager_ms = results["manager"][operation] * 1000
        print(f"{operation:<15}{rest_ms:>10.1f}{driver_ms:>10.1f}{driver_ms / rest_ms:>8.2f}"
              f"{manager_ms:>10.1f}{manager_ms / rest_ms:>8.2f}")
    print()
    if data_results is None:
        print("image copy: not measured (the appliance runs without its NFS server)")
        return
    raw_s = data_results["raw"]["image to volume"]
    driver_s = data_results["driver"]["image to volume"]
    print(f"copy_image_to_volume, user-space NFS path, {args.image_mib} MiB random raw image, "
          f"median of {args.image_runs}; baseline = our NFS client uploading the same bytes")
    print(f"{'path':<34}{'seconds':>9}{'MiB/s':>9}{'ratio':>8}")
    for label, seconds in (("raw NfsClient upload (baseline)", raw_s), ("driver copy_image_to_volume", driver_s)):
        print(f"{label:<34}{seconds:>9.3f}{args.image_mib / seconds:>9.1f}{seconds / raw_s:>8.2f}")


if __name__ == "__main__":
    main()
