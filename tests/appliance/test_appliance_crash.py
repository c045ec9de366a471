"""kill -9 the appliance at random moments, many times; after each restart disk and store agree.

A driver process (source below) runs the service on a data dir and loops over
create / snapshot / clone / revert / delete. The test SIGKILLs it at random
moments, reopens the data dir in-process (which runs reconcile) and checks the
invariants: no rows left creating/deleting, every row has its data and every
data directory its row, staging and trash empty, every clone complete, the
exports exactly the available shares and snapshots, and a second reconcile
finds nothing to fix.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acmenfs.appliance.service import ApplianceService
from acmenfs.nfs3.exports import ExportTable

VOLUME_SIZE = 4 << 20

DRIVER_SOURCE = r'''
import os, random, sys
from acmenfs.appliance.errors import ApplianceError
from acmenfs.appliance.service import ApplianceService

data_dir, backend, round_number = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(round_number)
service = ApplianceService(data_dir, backend=backend)
service.open()
print("ready", flush=True)
step = 0
while True:
    step += 1
    shares = [s for s in service.list_shares() if s.state == "available"]
    snapshots = [p for s in shares for p in service.list_snapshots(s.id)]
    choice = rng.random()
    try:
        if not shares or (choice < 0.3 and len(shares) < 8):
            share = service.create_share(f"s{round_number}-{step}", VOLUME_SIZE,
                                         volume={"name": f"vol-{step}", "sparse": rng.random() < 0.5})
            with open(os.path.join(data_dir, "shares", share.id, share.volume.name), "r+b") as handle:
                handle.write(os.urandom(VOLUME_SIZE // 2))
        elif choice < 0.5:
            service.create_snapshot(rng.choice(shares).id, f"p{round_number}-{step}")
        elif choice < 0.7 and snapshots:
            snapshot = rng.choice(snapshots)
            service.clone_snapshot(snapshot.id, f"c{round_number}-{step}", size=2 * snapshot.size,
                                   volume_name=f"cvol-{step}")
        elif choice < 0.78 and snapshots:
            snapshot = rng.choice(snapshots)
            service.revert_share(snapshot.share_id, snapshot.id)
        elif choice < 0.88 and snapshots:
            service.delete_snapshot(rng.choice(snapshots).id)
        else:
            service.delete_share(rng.choice(shares).id, cascade=True)
    except ApplianceError as exc:
        print("refused", exc.code, flush=True)
'''.replace("VOLUME_SIZE", str(VOLUME_SIZE))


def run_driver_and_kill(script: Path, data_dir: Path, backend: str, round_number: int, rng: random.Random) -> None:
    driver = subprocess.Popen(
        [sys.executable, str(script), str(data_dir), backend, str(round_number)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = driver.stdout.readline()
        assert ready.strip() == "ready", driver.stderr.read()
        time.sleep(rng.uniform(0.0, 0.4))
        assert driver.poll() is None, f"driver died on its own: {driver.stderr.read()}"
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()


def file_head(path: Path, length: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(length)


def check_invariants(service: ApplianceService, exports: ExportTable) -> None:
    layout, store = service.layout, service._store
    shares, snapshots = store.list_shares(), store.list_snapshots()
    assert [s.state for s in shares if s.state != "available"] == []
    assert [p.state for p in snapshots if p.state != "available"] == []
    assert sorted(os.listdir(layout.shares)) == sorted(s.id for s in shares)
    assert sorted(os.listdir(layout.snapshots)) == sorted(p.id for p in snapshots)
    assert os.listdir(layout.staging) == [] and os.listdir(layout.trash) == []
    snapshots_by_id = {p.id: p for p in snapshots}
    for share in shares:
        volume = layout.share_dir(share.id) / share.volume_name
        assert volume.is_file(), f"share {share.name} lost its volume file"
        assert volume.stat().st_size == share.size
        origin = snapshots_by_id.get(share.origin_snapshot_id)
        if origin is not None:  # a clone: complete copy of its snapshot's volume
            source = layout.snapshot_dir(origin.id) / origin.volume_name
            assert file_head(volume, VOLUME_SIZE) == file_head(source, VOLUME_SIZE)
    expected = {s.export_path for s in service.list_shares()} | {f"/snapshots/{p.id}" for p in snapshots}
    assert {e.path for e in exports.list()} == expected


@pytest.mark.parametrize("kind, backend, kills", [("ext4", "reflink", 40), ("btrfs", "btrfs", 15)])
def test_sigkill_at_random_moments_then_reconcile(kind, backend, kills, make_data_dir):
    data_dir = make_data_dir(kind)
    script = data_dir.with_name(data_dir.name + "-driver.py")
    script.write_text(DRIVER_SOURCE)
    rng = random.Random(20261125)
    fixes = []
    for round_number in range(kills):
        run_driver_and_kill(script, data_dir, backend, round_number, rng)
        exports = ExportTable()
        service = ApplianceService(data_dir, exports=exports, backend=backend)
        fixes += service.open()
        try:
            check_invariants(service, exports)
        finally:
            service.close()
        again = ApplianceService(data_dir, backend=backend)
        assert again.open() == [], "a second reconcile must find nothing left to fix"
        again.close()
    assert fixes, "no kill landed inside an operation: the test did not test anything"
    print(f"\n{kind}/{backend}: {kills} kills, {len(fixes)} reconcile fixes, e.g. {fixes[:3]}")
