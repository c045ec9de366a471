"""The user-space NFSv3 client: its codec tested with bytes, its I/O against the
appliance's real NFS server (and, for a server restart between WRITE and COMMIT,
a scripted RPC peer, since that cannot be provoked on demand)."""

from __future__ import annotations

import io
import os
import uuid

import pytest

from acmenfs.nfs3 import client as nfs
from acmenfs.nfs3.const import CreateMode, FileType, MountStat, NfsProc, NfsStat, StableHow
from acmenfs.oncrpc.xdr import Packer, XdrError
from conftest import require_nfs

MIB = 1024 * 1024
FH = bytes(range(20))


def fattr_bytes(size=4096, used=0, uid=7, gid=8, mode=0o660, file_type=FileType.REG) -> bytes:
    packer = Packer()
    for value in (file_type, mode, 1, uid, gid):
        packer.pack_uint(value)
    packer.pack_uhyper(size)
    packer.pack_uhyper(used)
    packer.pack_fopaque(8, bytes(8))  # rdev
    packer.pack_uhyper(1)  # fsid
    packer.pack_uhyper(99)  # fileid
    packer.pack_fopaque(24, bytes(24))  # times
    return packer.get_buffer()


def status_ok() -> Packer:
    packer = Packer()
    packer.pack_enum(NfsStat.OK)
    return packer


def test_write_args_layout():
    encoded = nfs.encode_write_args(FH, 1 << 33, b"abcde", StableHow.UNSTABLE)
    packer = Packer()
    packer.pack_opaque(FH)
    packer.pack_uhyper(1 << 33)
    packer.pack_uint(5)
    packer.pack_enum(StableHow.UNSTABLE)
    packer.pack_opaque(b"abcde")
    assert encoded == packer.get_buffer()
    assert len(encoded) % 4 == 0


def test_setattr_size_args_set_only_the_size():
    encoded = nfs.encode_setattr_size_args(FH, 123)
    tail = encoded[4 + len(FH):]
    # mode? no, uid? no, gid? no, size? yes 123, atime/mtime DONT_CHANGE, guard none
    assert tail == bytes(12) + (1).to_bytes(4, "big") + (123).to_bytes(8, "big") + bytes(12)


def test_create_args_refuse_exclusive():
    with pytest.raises(ValueError):
        nfs.encode_create_args(FH, "f", 0o600, CreateMode.EXCLUSIVE)


def test_read_result_gives_data_and_eof_without_copy():
    packer = status_ok()
    packer.pack_bool(True)
    packer.pack_raw(fattr_bytes())
    packer.pack_uint(3)
    packer.pack_bool(True)
    packer.pack_opaque(b"xyz")
    data, eof = nfs.decode_read_result(packer.get_buffer())
    assert (bytes(data), eof) == (b"xyz", True)
    assert isinstance(data, memoryview)


def test_read_result_with_lying_count_is_refused():
    packer = status_ok()
    packer.pack_bool(False)
    packer.pack_uint(4)
    packer.pack_bool(False)
    packer.pack_opaque(b"xyz")
    with pytest.raises(XdrError):
        nfs.decode_read_result(packer.get_buffer())


def test_write_result_skips_wcc_data():
    packer = status_ok()
    packer.pack_bool(True)
    packer.pack_fopaque(24, bytes(24))
    packer.pack_bool(True)
    packer.pack_raw(fattr_bytes())
    packer.pack_uint(5)
    packer.pack_enum(StableHow.FILE_SYNC)
    packer.pack_fopaque(8, b"verifier")
    assert nfs.decode_write_result(packer.get_buffer()) == nfs.WriteResult(5, StableHow.FILE_SYNC, b"verifier")


def test_error_status_names_the_procedure_and_status():
    packer = Packer()
    packer.pack_enum(NfsStat.ACCES)
    packer.pack_bool(False)
    packer.pack_bool(False)
    with pytest.raises(nfs.NfsError, match=r"WRITE: NFS3ERR_ACCES \(13\)") as caught:
        nfs.decode_write_result(packer.get_buffer())
    assert caught.value.status == NfsStat.ACCES


def test_mount_result_ok_and_refused():
    packer = Packer()
    packer.pack_enum(MountStat.OK)
    packer.pack_opaque(FH)
    packer.pack_array([1], packer.pack_int)
    assert nfs.decode_mnt_result(packer.get_buffer()) == FH

    refused = Packer()
    refused.pack_enum(MountStat.ACCES)
    with pytest.raises(nfs.NfsError, match="MNT /shares/x: MNT3ERR_ACCES"):
        nfs.decode_mnt_result(refused.get_buffer(), "/shares/x")


def test_getattr_lookup_create_fsinfo_results():
    attrs = nfs.decode_getattr_result((status_ok().get_buffer() + fattr_bytes(size=10, used=4096)))
    assert (attrs.size, attrs.used, attrs.uid, attrs.gid, attrs.mode) == (10, 4096, 7, 8, 0o660)
    assert nfs.is_regular_file(attrs)

    lookup = status_ok()
    lookup.pack_opaque(FH)
    lookup.pack_bool(False)
    lookup.pack_bool(False)
    assert nfs.decode_lookup_result(lookup.get_buffer()) == (FH, None)

    create = status_ok()
    create.pack_bool(False)  # no handle returned
    create.pack_bool(False)
    create.pack_bool(False)
    create.pack_bool(False)
    assert nfs.decode_create_result(create.get_buffer()) is None

    fsinfo = status_ok()
    fsinfo.pack_bool(False)
    for value in (1 << 20, 65536, 4096, 1 << 19, 65536, 4096, 8192):
        fsinfo.pack_uint(value)
    fsinfo.pack_uhyper(1 << 40)
    fsinfo.pack_fopaque(8, bytes(8))
    fsinfo.pack_uint(0)
    assert nfs.decode_fsinfo_result(fsinfo.get_buffer()) == nfs.FsInfo(1 << 20, 65536, 1 << 19, 65536, 1 << 40)


def test_zero_detection():
    assert nfs.is_all_zeros(bytes(MIB)) and nfs.is_all_zeros(bytes(3))
    assert not nfs.is_all_zeros(bytes(MIB - 1) + b"\1")
    assert not nfs.is_all_zeros(b"\0\0\2")


class ScriptedServer:
    """An RPC peer that answers FSINFO/WRITE/COMMIT with a verifier that changes
    after the writes (a server restart): only used where the real server cannot."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, port):  # rpc_factory
        return self

    def close(self) -> None:
        pass

    def call(self, prog, vers, proc, args=b""):
        self.calls.append(proc)
        packer = status_ok()
        if proc == NfsProc.FSINFO:
            packer.pack_bool(False)
            for value in (MIB, MIB, 4096, MIB, MIB, 4096, 8192):
                packer.pack_uint(value)
            packer.pack_uhyper(1 << 40)
            packer.pack_fopaque(8, bytes(8))
            packer.pack_uint(0)
        elif proc == NfsProc.WRITE:
            packer.pack_bool(False)
            packer.pack_bool(False)
            packer.pack_uint(len(args) - 4 - len(FH) - 8 - 4 - 4 - 4)
            packer.pack_enum(StableHow.UNSTABLE)
            packer.pack_fopaque(8, b"before!!")
        elif proc == NfsProc.COMMIT:
            packer.pack_bool(False)
            packer.pack_bool(False)
            packer.pack_fopaque(8, b"after!!!")
        return packer.get_buffer()


def test_upload_refuses_to_trust_a_commit_after_a_server_restart():
    server = ScriptedServer()
    client = nfs.NfsClient("127.0.0.1", 1, 2, rpc_factory=server, io_depth=2)
    with pytest.raises(nfs.NfsError, match="verifier changed"):
        client.upload(FH, io.BytesIO(b"a" * 100), 100)
    assert server.calls[-1] == NfsProc.COMMIT


# -- against the appliance's NFS server -----------------------------------------------

@pytest.fixture
def shared_file(appliance, rest):
    require_nfs(appliance)
    share = rest.create_share(f"nfsclient-{uuid.uuid4().hex[:8]}", 64 * MIB,
                              volume={"name": "disk", "mode": "0660"})
    rest.add_access(share["id"], "127.0.0.1", squash="none")
    yield share
    rest.delete_share(share["id"], cascade=True)


def test_upload_download_roundtrip_with_calls_in_flight(appliance, shared_file):
    data = os.urandom(3 * MIB + 17) + bytes(4 * MIB) + os.urandom(MIB)
    with nfs.NfsClient("127.0.0.1", appliance.nfs_port, appliance.mount_port, io_depth=4) as client:
        root = client.mount(shared_file["export_path"])
        fh = client.lookup(root, "disk")
        sent = client.upload(fh, io.BytesIO(data), len(data), skip_zeros=True)
        assert sent < len(data)  # the all-zero MiBs were not sent
        out = io.BytesIO()
        client.download(fh, out, len(data))
        assert out.getvalue() == data
        assert client.getattr(fh).size == 64 * MIB


def test_create_set_size_and_errors(appliance, shared_file):
    with nfs.NfsClient("127.0.0.1", appliance.nfs_port, appliance.mount_port) as client:
        root = client.mount(shared_file["export_path"])
        fh = client.create(root, "new-file", 0o640)
        client.write(fh, 0, b"hello", StableHow.FILE_SYNC)
        assert client.read(fh, 0, 100) == (b"hello", True)
        client.set_size(fh, 2)
        assert client.getattr(fh).size == 2
        with pytest.raises(nfs.NfsError, match="NFS3ERR_EXIST"):
            client.create(root, "new-file", 0o640)
        with pytest.raises(nfs.NfsError, match="NFS3ERR_NOENT"):
            client.lookup(root, "missing")
        with pytest.raises(nfs.NfsError, match="MNT3ERR"):
            client.mount("/shares/not-a-share")
