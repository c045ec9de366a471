"""Fixtures for the ONC RPC tests: a real RpcServer on 127.0.0.1 in a background thread."""

from __future__ import annotations

import pytest

from acmenfs.oncrpc.dispatch import RpcDispatcher
from acmenfs.oncrpc.drc import DuplicateRequestCache
from rpc_test_service import EchoService, ThreadedServer


@pytest.fixture
def service() -> EchoService:
    return EchoService()


@pytest.fixture
def rpc_server(service):
    dispatcher = RpcDispatcher([service.program()], drc=DuplicateRequestCache(max_entries=1024))
    server = ThreadedServer(dispatcher, max_record_size=256 * 1024,
                            partial_record_timeout=1.0).start()
    yield server
    server.stop()

