"""``GET /v1/version`` says which NFS versions the running server serves (``nfs_versions``).

A real ``acmenfs serve`` (in-process NFS server with ``--workers 1``, the worker
supervisor by default on a multi-core host, and ``--no-nfs``); what the answer
claims is checked against the NFS port itself with RPC calls: NULL answers for
every major version listed, and an unserved version's PROG_MISMATCH names
exactly the listed range.
"""

from __future__ import annotations

import httpx
import pytest

from acmenfs.appliance.api import served_nfs_versions
from acmenfs.oncrpc.client import RpcAcceptError, RpcClient
from api_fixtures import ServeProcess, nfs_server_available

NFS_PROGRAM = 100003
PROG_MISMATCH = 2


def start(serve_processes, data_dir, *args, **kwargs) -> ServeProcess:
    process = ServeProcess(data_dir, *args, **kwargs)
    serve_processes.append(process)
    return process.start()


def version_answer(serve: ServeProcess) -> dict:
    response = httpx.get(serve.url + "/v1/version", timeout=30)
    assert response.status_code == 200
    return response.json()


def majors_of(nfs_versions: list[str]) -> set[int]:
    return {int(version.split(".")[0]) for version in nfs_versions}


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_version_lists_what_the_nfs_port_answers(serve_processes, tmp_path, workers):
    serve = start(serve_processes, tmp_path / "data", "--workers", workers)
    answer = version_answer(serve)
    assert answer["nfs_versions"] == ["3", "4.0", "4.1", "4.2"]
    # One connection per version, as clients do: with several workers a connection goes to a
    # worker by its first call, and only that call's version is sure to be served on it.
    for major in sorted(majors_of(answer["nfs_versions"])):
        with RpcClient("127.0.0.1", serve.nfs_port, timeout=10) as rpc:
            assert rpc.call(NFS_PROGRAM, major, 0) == b""  # NULL
    with RpcClient("127.0.0.1", serve.nfs_port, timeout=10) as rpc, pytest.raises(RpcAcceptError) as refused:
        rpc.call(NFS_PROGRAM, 5, 0)
    assert refused.value.accept_stat == PROG_MISMATCH
    low, high = refused.value.mismatch
    assert set(range(low, high + 1)) == majors_of(answer["nfs_versions"])


def test_version_without_nfs_lists_none(serve_processes, tmp_path):
    serve = start(serve_processes, tmp_path / "data", nfs=False)
    assert version_answer(serve)["nfs_versions"] == []


def test_served_versions_of_no_server_is_empty():
    assert served_nfs_versions(None) == []
