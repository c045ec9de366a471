"""The real `rpcinfo` client (Debian package rpcbind) against our server and registration."""

from __future__ import annotations

import subprocess

import pytest

from acmenfs.oncrpc import rpcbind as pmap

from rpc_test_service import TEST_PROG


def rpcinfo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rpcinfo", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def registered(rpcbind, rpc_server):
    """Our TCP and UDP ports registered with the portmapper (PMAP v2 SET), removed after."""
    mappings = [
        pmap.Mapping(TEST_PROG, 1, "tcp", rpc_server.port),
        pmap.Mapping(TEST_PROG, 1, "udp", rpc_server.udp_port),
        # registered but not served here: lets rpcinfo reach us and see our error statuses
        pmap.Mapping(TEST_PROG, 2, "tcp", rpc_server.port),
        pmap.Mapping(TEST_PROG + 1, 1, "tcp", rpc_server.port),
    ]
    assert pmap.register(mappings) == mappings
    yield rpc_server
    pmap.unregister(mappings)


def test_rpcinfo_calls_null_over_tcp_and_udp(registered):
    tcp = rpcinfo("-n", str(registered.port), "-t", "127.0.0.1", str(TEST_PROG), "1")
    assert tcp.returncode == 0, tcp.stderr
    assert "ready and waiting" in tcp.stdout
    udp = rpcinfo("-n", str(registered.udp_port), "-u", "127.0.0.1", str(TEST_PROG), "1")
    assert udp.returncode == 0, udp.stderr


def test_rpcinfo_reports_version_mismatch_with_our_range(registered):
    result = rpcinfo("-n", str(registered.port), "-t", "127.0.0.1", str(TEST_PROG), "2")
    assert result.returncode != 0
    assert "low version = 1, high version = 1" in result.stderr


def test_rpcinfo_reports_program_unavailable(registered):
    result = rpcinfo("-n", str(registered.port), "-t", "127.0.0.1", str(TEST_PROG + 1), "1")
    assert result.returncode != 0
    assert "Program unavailable" in result.stderr


def test_registration_is_visible_to_the_portmapper_and_removed(registered):
    listing = rpcinfo("-p", "127.0.0.1").stdout
    assert any(line.split()[:4] == [str(TEST_PROG), "1", "tcp", str(registered.port)]
               for line in listing.splitlines()[1:]), listing
    assert pmap.get_port(TEST_PROG, 1, "tcp") == registered.port


def test_server_registers_with_the_portmapper_on_start_and_unregisters_on_close(rpcbind, service):
    from acmenfs.oncrpc.dispatch import RpcDispatcher
    from rpc_test_service import ThreadedServer
    server = ThreadedServer(RpcDispatcher([service.program()]), register_portmapper=True).start()
    try:
        assert pmap.get_port(TEST_PROG, 1, "tcp") == server.port
        assert pmap.get_port(TEST_PROG, 1, "udp") == server.udp_port
        assert rpcinfo("-t", "127.0.0.1", str(TEST_PROG), "1").returncode == 0
    finally:
        server.stop()
    assert pmap.get_port(TEST_PROG, 1, "tcp") == 0
