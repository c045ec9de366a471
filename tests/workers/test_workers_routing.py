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
        v4.receive_record()  # answered: the connection is adopted
        assert wait_for(lambda: connections(supervisor) == [1, 0], 10, "v4 connection on worker 0")
    wait_for(lambda: connections(supervisor) == [0, 0], 10, "closed")
    with PortClient(supervisor.port, port_of_worker_1) as v3:
        v3.send_raw(call_header(2, 3))
        v3.receive_record()
        assert wait_for(lambda: connections(supervisor) == [0, 1], 10, "v3 connection on worker 1")


def accept_reply(record: bytes) -> tuple[int, bytes]:
    """(accept_stat, what follows it) of a reply to an AUTH_NONE call."""
    _xid, msg_type, reply_stat, _flavor, _length, accept_stat = struct.unpack_from(">IIIIII", record)
    assert msg_type == 1 and reply_stat == 0, (msg_type, reply_stat)
    return accept_stat, record[24:]


def test_nfs4_on_a_connection_that_began_with_nfs3_is_refused_not_served_apart(supervisor):
    """All NFSv4 state lives in worker 0.  A connection handed to worker 1 for its first (v3)
    call that then speaks v4 gets PROG_MISMATCH 3..3 from worker 1: serving v4 there would
    keep opens and locks that worker 0's clients cannot see (two hosts could both lock)."""
    port_of_worker_1 = ports_for_workers(2, per_worker=1)[1][0]
    with PortClient(supervisor.port, port_of_worker_1) as client:
        client.send_raw(call_header(1, 3))
        assert accept_reply(client.receive_record())[0] == 0  # v3 NULL: SUCCESS, on worker 1
        assert wait_for(lambda: connections(supervisor) == [0, 1], 10, "v3 connection on worker 1")
        client.send_raw(call_header(2, 4))
        accept_stat, rest = accept_reply(client.receive_record())
        assert accept_stat == 2 and struct.unpack(">II", rest[:8]) == (3, 3)  # PROG_MISMATCH, v3 only
    wait_for(lambda: connections(supervisor) == [0, 0], 10, "closed")
    with PortClient(supervisor.port, port_of_worker_1) as v4:  # v4 first: worker 0 serves it
        v4.send_raw(call_header(3, 4))
        assert accept_reply(v4.receive_record())[0] == 0


def test_an_unserved_nfs_version_first_is_refused_with_every_version_the_server_has(supervisor):
    """A client probing version 5 first, from a port whose home is worker 1, learns 3..4 (worker
    0 serves both), not worker 1's 3..3: it would otherwise never try version 4."""
    port_of_worker_1 = ports_for_workers(2, per_worker=1)[1][0]
    with PortClient(supervisor.port, port_of_worker_1) as client:
        client.send_raw(call_header(1, 5))
        accept_stat, rest = accept_reply(client.receive_record())
        assert accept_stat == 2 and struct.unpack(">II", rest[:8]) == (3, 4)  # PROG_MISMATCH 3..4
