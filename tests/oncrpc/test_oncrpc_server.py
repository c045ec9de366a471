"""The RPC server over real sockets: pipelining, fragments, UDP, sendfile, and bad input."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.client import AsyncRpcClient, AuthSys, RpcAcceptError, RpcClient, RpcError, frame
from acmenfs.oncrpc.dispatch import FileRegion, Procedure, Program, RpcDispatcher
from acmenfs.oncrpc.record import LAST_FRAGMENT, RecordReader
from acmenfs.oncrpc.xdr import Packer, Unpacker

from rpc_test_service import TEST_PROG, TEST_VERS, ThreadedServer


def opaque(data: bytes) -> bytes:
    packer = Packer()
    packer.pack_opaque(data)
    return packer.get_buffer()


def test_null_and_echo_over_tcp(rpc_server):
    with RpcClient("127.0.0.1", rpc_server.port) as client:
        assert client.call(TEST_PROG, TEST_VERS, 0) == b""
        payload = os.urandom(100_000)
        assert Unpacker(client.call(TEST_PROG, TEST_VERS, 1, opaque(payload))).unpack_opaque() == payload


def test_udp_calls(rpc_server):
    with RpcClient("127.0.0.1", rpc_server.udp_port, transport="udp", auth=AuthSys(7, 8)) as client:
        body = Unpacker(client.call(TEST_PROG, TEST_VERS, 2))
        assert (body.unpack_uint(), body.unpack_uint(), body.unpack_uint()) == (1, 7, 8)


def test_many_calls_in_flight_and_replies_out_of_order(rpc_server):
    async def scenario():
        async with AsyncRpcClient("127.0.0.1", rpc_server.port) as client:
            order = []

            async def sleeper(ms):
                body = await client.call(TEST_PROG, TEST_VERS, 4, struct.pack(">I", ms))
                order.append(Unpacker(body).unpack_uint())

            await asyncio.gather(*(sleeper(ms) for ms in (300, 200, 100, 0)))
            echoes = await asyncio.gather(*(
                client.call(TEST_PROG, TEST_VERS, 1, opaque(bytes([i]) * i)) for i in range(64)))
            return order, [bytes(Unpacker(e).unpack_opaque()) for e in echoes]

    order, echoes = rpc_server.run(scenario())
    assert order == [0, 100, 200, 300]
    assert echoes == [bytes([i]) * i for i in range(64)]


def test_multi_fragment_call_is_reassembled(rpc_server):
    message = rpc.encode_call(42, TEST_PROG, TEST_VERS, 1, opaque(b"fragmented!" * 50))
    pieces = [message[i:i + 37] for i in range(0, len(message), 37)]
    stream = b"".join(
        struct.pack(">I", (LAST_FRAGMENT if i == len(pieces) - 1 else 0) | len(p)) + p
        for i, p in enumerate(pieces))
    with RpcClient("127.0.0.1", rpc_server.port) as client:
        for i in range(0, len(stream), 5):  # dribble it in
            client.send_raw(stream[i:i + 5])
        _, body = __import__("acmenfs.oncrpc.client", fromlist=["parse_reply"]).parse_reply(
            client.receive_record())
        assert Unpacker(body).unpack_opaque() == b"fragmented!" * 50


def test_multi_fragment_replies():
    from rpc_test_service import EchoService
    dispatcher = RpcDispatcher([EchoService().program()])
    server = ThreadedServer(dispatcher, max_reply_fragment=1000).start(udp=False)
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(frame(rpc.encode_call(1, TEST_PROG, TEST_VERS, 1, opaque(b"z" * 5000))))
        raw = b""
        reader = RecordReader(1 << 20)
        records = []
        while not records:
            chunk = sock.recv(65536)
            raw += chunk
            buf = reader.get_buffer()
            buf[:len(chunk)] = chunk
            records = reader.buffer_updated(len(chunk))
        sock.close()
        first_header = struct.unpack(">I", raw[:4])[0]
        assert first_header == 1000  # not the last fragment
        assert bytes(records[0]).endswith(b"z" * 5000)
    finally:
        server.stop()


def test_file_region_replies_use_sendfile_over_tcp_and_pread_over_udp():
    data = os.urandom(3 * 1024 * 1024)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()

        def read_range(ctx, args):
            offset, count = args.unpack_uint(), args.unpack_uint()
            return [struct.pack(">I", count), FileRegion(f, offset, count)]

        program = Program(TEST_PROG, TEST_VERS, "FILE", {1: Procedure("READ", read_range, blocking=True)})
        server = ThreadedServer(RpcDispatcher([program]), max_record_size=8 << 20).start()
        try:
            with RpcClient("127.0.0.1", server.port) as client:
                for offset, count in ((0, 1 << 20), (12345, 2 * 1024 * 1024 + 7), (len(data) - 10, 10)):
                    body = client.call(TEST_PROG, TEST_VERS, 1, struct.pack(">II", offset, count))
                    assert body[4:] == data[offset:offset + count]
            with RpcClient("127.0.0.1", server.udp_port, transport="udp") as client:
                body = client.call(TEST_PROG, TEST_VERS, 1, struct.pack(">II", 100, 4000))
                assert body[4:] == data[100:4100]
        finally:
            server.stop()


def test_retransmission_over_a_new_connection_from_the_same_port_hits_the_cache(rpc_server, service):
    message = rpc.encode_call(4242, TEST_PROG, TEST_VERS, 3, struct.pack(">I", 10))
    replies = []
    port = None
    for _ in range(2):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port or 0))
        port = sock.getsockname()[1]
        sock.connect(("127.0.0.1", rpc_server.port))
        sock.sendall(frame(message))
        reader = RecordReader(1 << 16)
        records = []
        while not records:
            buf = reader.get_buffer()
            records = reader.buffer_updated(sock.recv_into(buf))
        replies.append(bytes(records[0]))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST: no TIME_WAIT, so the next connection can reuse the port
    assert replies[0] == replies[1]
    assert service.counter == 10


def test_oversized_record_closes_only_that_connection(rpc_server):
    bad = socket.create_connection(("127.0.0.1", rpc_server.port))
    bad.sendall(struct.pack(">I", LAST_FRAGMENT | (100 << 20)))
    bad.settimeout(5)
    assert bad.recv(10) == b""  # closed without reading 100 MiB
    bad.close()
    with RpcClient("127.0.0.1", rpc_server.port) as good:
        assert good.call(TEST_PROG, TEST_VERS, 0) == b""
    assert rpc_server.server.stats()["oversized_records"] == 1


def test_stalled_partial_record_is_closed_after_the_timeout(rpc_server):
    slow = socket.create_connection(("127.0.0.1", rpc_server.port))
    slow.sendall(struct.pack(">I", LAST_FRAGMENT | 1000) + b"only a little")
    slow.settimeout(10)
    assert slow.recv(10) == b""
    slow.close()
    assert rpc_server.server.stats()["partial_record_timeouts"] == 1


def test_garbage_gets_garbage_args_and_server_keeps_answering(rpc_server):
    with RpcClient("127.0.0.1", rpc_server.port) as client:
        with pytest.raises(RpcAcceptError) as info:
            client.call(TEST_PROG, TEST_VERS, 1, b"\0\0\0\x50short")
        assert info.value.accept_stat == rpc.AcceptStat.GARBAGE_ARGS
        client.send_raw(frame(b"\x01\x02\x03"))  # not even an xid + type: ignored
        assert client.call(TEST_PROG, TEST_VERS, 0) == b""


def _mutate(message: bytes, rnd: random.Random) -> bytes:
    data = bytearray(message)
    for _ in range(rnd.randint(1, 6)):
        choice = rnd.random()
        if choice < 0.5 and data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif choice < 0.75:
            del data[rnd.randrange(len(data) + 1):]
        else:
            data += os.urandom(rnd.randint(1, 40))
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), raw=st.binary(max_size=300))
def test_fuzzed_records_never_hurt_a_well_formed_client(rpc_server, seed, raw):
    rnd = random.Random(seed)
    valid = [rpc.encode_call(rnd.getrandbits(32), TEST_PROG, TEST_VERS, proc, args,
                             rpc.AuthFlavor.SYS, rpc.encode_auth_sys(1, 2, (3,), "m"))
             for proc, args in ((0, b""), (1, opaque(b"abc")), (2, b""), (3, b"\0\0\0\x01"))]
    records = [_mutate(rnd.choice(valid), rnd) for _ in range(5)] + [raw]
    fuzzer = socket.create_connection(("127.0.0.1", rpc_server.port))
    fuzzer.settimeout(2)
    try:
        for record in records:
            if rnd.random() < 0.8:
                fuzzer.sendall(frame(record))
            else:
                fuzzer.sendall(record)  # unframed bytes: random lengths, maybe huge
    except OSError:
        pass  # the server may close a connection that sent an oversized header
    finally:
        fuzzer.close()
    with RpcClient("127.0.0.1", rpc_server.port, timeout=10) as good:
        assert good.call(TEST_PROG, TEST_VERS, 0) == b""
        assert Unpacker(good.call(TEST_PROG, TEST_VERS, 1, opaque(b"still here"))).unpack_opaque() == b"still here"


def test_fuzzed_udp_datagrams_never_hurt_the_server(rpc_server):
    rnd = random.Random(1)
    valid = rpc.encode_call(1, TEST_PROG, TEST_VERS, 1, opaque(b"abc"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(300):
        sock.sendto(_mutate(valid, rnd), ("127.0.0.1", rpc_server.udp_port))
    sock.close()
    with RpcClient("127.0.0.1", rpc_server.udp_port, transport="udp", timeout=10) as good:
        assert good.call(TEST_PROG, TEST_VERS, 0) == b""


def test_connection_closed_by_server_is_an_rpc_error(rpc_server):
    client = RpcClient("127.0.0.1", rpc_server.port, timeout=10)
    assert client.call(TEST_PROG, TEST_VERS, 0) == b""  # the server has accepted it
    rpc_server.run(rpc_server.server.close())
    with pytest.raises((RpcError, OSError)):
        client.call(TEST_PROG, TEST_VERS, 0)
    client.close()
