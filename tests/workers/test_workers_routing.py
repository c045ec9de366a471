"""End to end routing in a Supervisor run in the test process: an NFSv4 connection goes to
worker 0 even from a client port whose home is worker 1; an NFSv3 one goes to its home worker.
Which worker holds a connection is read from each worker's own ``connections`` count."""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.workers.supervisor import Supervisor
from workers_helpers import PortClient, ports_for_workers, wait_for


@pytest.fixture
def supervisor(tmp_path):
    (tmp_path / "export").mkdir()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    table = ExportTable([Export("/e", str(tmp_path / "export"), rules=(ClientRule("127.0.0.1", squash="none"),))])
    running = Supervisor(table, tmp_path / "state", workers=2, busy_poll=0, log_level="WARNING")
    asyncio.run_coroutine_threadsafe(running.start("127.0.0.1", 0, 0), loop).result(120)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def connections(supervisor: Supervisor) -> list[int]:
    return [slot.channel.request({"op": "stats"}, timeout=10)["connections"] for slot in supervisor.slots]


def call_header(xid: int, version: int) -> bytes:
    body = struct.pack(">IIIIIIIIII", xid, 0, 2, 100003, version, 0, 0, 0, 0, 0)  # NULL, AUTH_NONE
    return struct.pack(">I", 0x80000000 | len(body)) + body


def test_nfs4_goes_to_worker_0_and_nfs3_to_its_home_worker(supervisor):
    port_of_worker_1 = ports_for_workers(2, per_worker=1)[1][0]
    with PortClient(supervisor.port, port_of_worker_1) as v4:
        v4.send_raw(call_header(1, 4))
        v4.receive_record()  # answered (PROG_MISMATCH until NFSv4 exists): the connection is adopted
        assert wait_for(lambda: connections(supervisor) == [1, 0], 10, "v4 connection on worker 0")
    wait_for(lambda: connections(supervisor) == [0, 0], 10, "closed")
    with PortClient(supervisor.port, port_of_worker_1) as v3:
        v3.send_raw(call_header(2, 3))
        v3.receive_record()
        assert wait_for(lambda: connections(supervisor) == [0, 1], 10, "v3 connection on worker 1")
