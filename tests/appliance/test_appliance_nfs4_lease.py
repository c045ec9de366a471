"""``acmenfs serve --nfs4-lease-seconds``: the appliance's NFSv4 lease (and grace period) is
configurable like ``acmenfs nfsd``'s, 90 s by default, in process (``--workers 1``) and in the
worker that holds the v4 state (``--workers 2``); checked through the LEASE_TIME attribute a
real v4 client reads over the NFS port."""

from __future__ import annotations

import struct

import pytest

from acmenfs.nfs4.client import Nfs4Client, Ops
from api_fixtures import ServeProcess, nfs_server_available

LEASE_TIME = 10


def lease_time_of(port: int) -> int:
    client = Nfs4Client.connect("127.0.0.1", port, minor=0)
    try:
        attrs, data = client.call(Ops.putrootfh(), Ops.getattr(LEASE_TIME)).last.value
        assert attrs == [1 << LEASE_TIME]
        return struct.unpack(">I", data)[0]
    finally:
        client.close()


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
@pytest.mark.parametrize("workers, extra, seconds", [
    ("1", (), 90), ("1", ("--nfs4-lease-seconds", "7"), 7), ("2", ("--nfs4-lease-seconds", "11"), 11)])
def test_serve_lease_seconds_reach_the_lease_time_attribute(serve_processes, tmp_path, workers, extra, seconds):
    serve = ServeProcess(tmp_path / "data", "--workers", workers, *extra)
    serve_processes.append(serve)
    serve.start()
    assert lease_time_of(serve.nfs_port) == seconds
