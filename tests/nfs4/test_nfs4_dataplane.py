"""NFSv4 READ / WRITE / COMMIT as the v3 data path runs them (sans-IO, raw bytes through the
dispatcher): an UNSTABLE WRITE stays on the event loop, a stable one goes to the pool; COMMIT
with data to flush awaits the group committer on the event loop (no pool thread waits) and
resumes the COMPOUND; v4 payload bytes land in the server's bytes_read / bytes_written."""

from __future__ import annotations

import asyncio

import pytest

from nfs4_core_helpers import (
    Sans4, commit, compound_args, getattr_, parse_compound, putfh, read, remove, write,
)
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import materialize

OK = 0
UNSTABLE, FILE_SYNC = 0, 2


def begin(v4: Sans4, ops: list[bytes], minor: int = 0):
    v4.xid += 1
    record = rpc.encode_call(v4.xid, 100003, 4, 1, compound_args(ops, minor), cred_flavor=1,
                             cred_body=rpc.encode_auth_sys(0, 0))
    return v4.dispatcher.begin(record, ("127.0.0.1", 800), "tcp")


def reply_of(parts) -> object:
    return parse_compound(materialize(parts)[24:])


class NoPool:
    """Stands in for the server's thread pool where a test asserts nothing runs in it."""

    def submit(self, *args, **kwargs):
        raise AssertionError("a pool thread was used")


@pytest.fixture
def file_fh(v4, export_dir):
    (export_dir / "f").write_bytes(b"0" * 8192)
    (export_dir / "f").read_bytes()            # in the page cache: an inline write needs no disk read
    return v4.fh_of("/e/f")


def test_unstable_write_runs_inline_and_a_file_sync_write_in_the_pool(v4, export_dir, file_fh):
    pending = begin(v4, [putfh(file_fh), write(0, b"inline!!", UNSTABLE)])
    parts = v4.dispatcher.run_inline_first(pending)
    assert parts is not None and reply_of(parts).status == OK
    assert (export_dir / "f").read_bytes()[:8] == b"inline!!"

    pending = begin(v4, [putfh(file_fh), write(0, b"synced!!", FILE_SYNC)])
    assert v4.dispatcher.run_inline_first(pending) is None           # waits for the disk: pool
    assert (export_dir / "f").read_bytes()[:8] == b"inline!!"         # not written before the hop
    assert reply_of(v4.dispatcher.run_sync(pending)).status == OK
    assert (export_dir / "f").read_bytes()[:8] == b"synced!!"


def test_commit_with_nothing_to_flush_answers_inline(v4, file_fh):
    committer = v4.server.state.committer
    v4.server.state.committer.durable.wait_for(committer.ticket() or 0, timeout=10)
    pending = begin(v4, [putfh(file_fh), commit()])
    parts = v4.dispatcher.run_inline_first(pending)
    assert parts is not None
    reply = reply_of(parts)
    assert reply.status == OK and reply.results[-1].value == committer.verifier


def test_commit_of_unstable_data_awaits_the_group_committer_without_a_pool_thread(v4, file_fh, monkeypatch):
    committer = v4.server.state.committer
    write_pending = begin(v4, [putfh(file_fh), write(0, b"x" * 4096, UNSTABLE)])
    assert reply_of(v4.dispatcher.run_inline_first(write_pending)).status == OK
    pending = begin(v4, [putfh(file_fh), commit(), getattr_(4)])
    assert v4.dispatcher.run_inline_first(pending) is None
    assert getattr(pending, "resume", None) is not None               # RunAsync, not RunInPool
    monkeypatch.setattr(v4.server.state, "executor", NoPool())
    flushed_before = committer.durable.value
    reply = reply_of(asyncio.run(v4.dispatcher.run_resumed(pending)))
    assert reply.statuses == [OK, OK, OK]                              # resumed at COMMIT, then GETATTR
    assert reply.results[1].value == committer.verifier
    assert committer.durable.value > flushed_before                    # a group-commit round ran


def test_commit_resumes_in_the_pool_when_a_later_op_must_run_there(v4, export_dir, file_fh):
    (export_dir / "gone").write_text("x")
    directory = v4.fh_of("/e")
    write_pending = begin(v4, [putfh(file_fh), write(0, b"y" * 4096, UNSTABLE)])
    assert reply_of(v4.dispatcher.run_inline_first(write_pending)).status == OK
    pending = begin(v4, [putfh(file_fh), commit(), putfh(directory), remove("gone")])
    assert v4.dispatcher.run_inline_first(pending) is None and pending.resume is not None
    assert (export_dir / "gone").exists()
    reply = reply_of(asyncio.run(v4.dispatcher.run_resumed(pending)))
    assert reply.statuses == [OK, OK, OK, OK] and not (export_dir / "gone").exists()


def test_v4_read_and_write_bytes_count_in_the_v3_data_stats(v4, file_fh):
    server = v4.server
    read_before, written_before = server.bytes_read, server.bytes_written
    assert v4.compound([putfh(file_fh), write(0, b"z" * 3000, UNSTABLE)]).status == OK
    assert v4.compound([putfh(file_fh), read(100, 1000)]).status == OK
    assert v4.compound([putfh(file_fh), read(8000, 1000)]).status == OK   # 192 bytes before EOF
    assert server.bytes_written - written_before == 3000
    assert server.bytes_read - read_before == 1000 + 192
    assert server.stats()["bytes_read"] == server.bytes_read


def test_a_failed_v4_read_counts_nothing(v4, export_dir):
    server = v4.server
    before = server.bytes_read
    reply = v4.compound([putfh(v4.fh_of("/e")), read(0, 100)])           # a directory: ISDIR
    assert reply.status == 21 and server.bytes_read == before


def _session(v4):
    from acmenfs.nfs4.client import Nfs4Client
    client = Nfs4Client(lambda args: v4.body(args), minor=1)
    client.establish()
    return client


@pytest.mark.parametrize("cachethis", [False, True])
def test_a_41_read_reply_is_kept_in_its_slot_only_when_the_client_asks(v4, export_dir, file_fh, cachethis):
    from acmenfs.nfs4.client import Ops, compound_args as args41
    client = _session(v4)
    client.slot_seqid += 1
    request = args41([Ops.sequence(client.sessionid, client.slot_seqid, cache=cachethis), putfh(file_fh),
                      read(0, 4096)], 1)
    first = v4.body(request)
    assert parse_compound(first).statuses == [OK, OK, OK]
    assert b"0" * 4096 in first
    retry = v4.body(request)                                              # same slot, same seqid
    if cachethis:
        assert retry == first
    else:
        assert parse_compound(retry).statuses == [10068]                  # NFS4ERR_RETRY_UNCACHED_REP
    assert client.call(putfh(file_fh), getattr_(4)).status == OK          # the slot goes on


def test_over_tcp_a_41_client_writes_unstable_and_commits_through_the_transport(tmp_path):
    """The real transport (oncrpc/server.py): COMMIT's RunAsync path answers, with the write
    verifier, and the data is in the file."""
    from acmenfs.nfs4.client import Ops
    from test_nfs4_session_e2e import Nfsd
    export = tmp_path / "export"
    export.mkdir()
    server = Nfsd(export, tmp_path / "state", tmp_path / "nfsd.log")
    client = server.client(minor=1)
    try:
        client.establish()
        fh, stateid = client.open("/e/disk.img", create="unchecked")
        data = bytes(range(256)) * 256
        written = client.call(Ops.putfh(fh), Ops.write(stateid, 4096, data, stable=UNSTABLE)).last.value
        assert written[0] == len(data) and written[1] == UNSTABLE
        committed = client.call(Ops.putfh(fh), commit(), getattr_(4))
        assert [r.status for r in committed.results] == [OK, OK, OK, OK]   # SEQUENCE PUTFH COMMIT GETATTR
        assert committed.results[2].value == written[2]                    # COMMIT's verifier = WRITE's
        assert (export / "disk.img").read_bytes()[4096:] == data
    finally:
        client.close()
        server.stop()
