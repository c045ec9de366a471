"""``acmenfs serve --workers 2``: a share revert reopens the share on every worker.

The revert swaps the share's directory under the same export path; each worker
already holding the old tree open must reopen it (the export's generation went
up in the supervisor's table and travelled to the workers): through either worker
the old tree's handles answer STALE and a fresh mount reads the snapshot's data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from acmenfs.nfs3.const import NfsProc
from acmenfs.oncrpc.xdr import Packer
from workers_helpers import PortClient, create_file, lookup, pack_diropargs, ports_for_workers, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "nfs3"))
from nfs3_helpers import skip_post_op_attr  # noqa: E402

FILE_SYNC = 2
NFS3ERR_STALE = 70


def read_all(client: PortClient, fh: bytes) -> tuple[int, bytes]:
    packer = Packer()
    packer.pack_opaque(fh)
    packer.pack_uhyper(0)
    packer.pack_uint(1 << 16)
    reply = client.nfs(NfsProc.READ, packer.get_buffer())
    if reply.status != 0:
        return reply.status, b""
    skip_post_op_attr(reply.args)
    reply.args.unpack_uint()   # count
    reply.args.unpack_bool()   # eof
    return 0, reply.args.unpack_opaque(1 << 16)


def test_a_reverted_share_reads_the_snapshot_through_every_worker(serve_workers):
    serve = serve_workers(2)
    ports = ports_for_workers(2, per_worker=1)
    with serve.api() as api:
        response = api.post("/v1/shares", json={"name": "rv", "size": 1 << 20,
                                                "access": [{"client": "127.0.0.1", "squash": "none"}]})
        assert response.status_code == 201, response.text
        share = response.json()
        with PortClient(serve.mount_port, ports[0][0]) as mount:
            root = mount.mnt(share["export_path"])
        with PortClient(serve.port, ports[0][0]) as client:
            fh = create_file(client, root, "data")
            assert write(client, fh, 0, b"snapshot data", FILE_SYNC)[0] == 0
        response = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s1"})
        assert response.status_code == 201, response.text
        snapshot = response.json()
        clients = {worker: PortClient(serve.port, local[0]) for worker, local in ports.items()}
        try:
            assert write(clients[0], fh, 0, b"LATER DATA!!!", FILE_SYNC)[0] == 0
            for client in clients.values():  # both workers hold the share (and the file) open
                assert read_all(client, lookup(client, root, "data")) == (0, b"LATER DATA!!!")
            response = api.post(f"/v1/shares/{share['id']}/revert", json={"snapshot_id": snapshot["id"]})
            assert response.status_code == 200, response.text
            # the API has answered: on open connections, each worker calls the swapped-out tree's
            # handles stale and serves the reverted tree under a fresh mount
            for worker, client in clients.items():
                assert client.nfs(NfsProc.LOOKUP, pack_diropargs(root, "data")).status == NFS3ERR_STALE, worker
                assert read_all(client, fh)[0] == NFS3ERR_STALE, worker
            with PortClient(serve.mount_port, ports[1][0]) as mount:
                new_root = mount.mnt(share["export_path"])
            for worker, client in clients.items():
                assert read_all(client, lookup(client, new_root, "data")) == (0, b"snapshot data"), worker
        finally:
            for client in clients.values():
                client.close()
