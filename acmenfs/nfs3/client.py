"""A small user-space NFSv3 + MOUNT v3 client (RFC 1813), for copying volume data.

Owns: encoding the arguments and decoding the results of the few procedures a
data copy needs (MNT, GETATTR, LOOKUP, CREATE, SETATTR(size), READ, WRITE,
COMMIT, FSINFO) as pure functions over bytes, and ``NfsClient`` which sends them
through ``acmenfs.oncrpc.client.RpcClient``, with bulk helpers that keep several
1 MiB READs/WRITEs in flight (one TCP connection per in-flight call).

Must not: touch the local file system beyond the file objects it is handed,
import anything outside the standard library and ``acmenfs.oncrpc`` /
``acmenfs.nfs3.const`` (it runs inside cinder-volume), or decode more of RFC 1813
than it uses.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from acmenfs.nfs3.const import (
    MNTPATHLEN,
    MOUNT_PROGRAM,
    MOUNT_V3,
    NFS3_FHSIZE,
    NFS3_WRITEVERFSIZE,
    NFS_PROGRAM,
    NFS_V3,
    CreateMode,
    FileType,
    MountProc,
    MountStat,
    NfsProc,
    NfsStat,
    StableHow,
)
from acmenfs.oncrpc.xdr import Packer, Unpacker, XdrError

MIB = 1024 * 1024
DEFAULT_IO_SIZE = MIB


class NfsError(Exception):
    """An NFS or MOUNT procedure answered with a status other than OK."""

    def __init__(self, procedure: str, status: int, what: str = "") -> None:
        self.procedure = procedure
        self.status = status
        name = _status_name(procedure, status)
        super().__init__(f"{procedure}{' ' + what if what else ''}: {name} ({status})")


def _status_name(procedure: str, status: int) -> str:
    enum_type = MountStat if procedure == "MNT" else NfsStat
    try:
        return f"{'MNT3ERR' if procedure == 'MNT' else 'NFS3ERR'}_{enum_type(status).name}"
    except ValueError:
        return "unknown status"


@dataclass(frozen=True, slots=True)
class Fattr:
    """The parts of fattr3 a data copy uses."""

    type: int
    mode: int
    uid: int
    gid: int
    size: int
    used: int
    fileid: int


@dataclass(frozen=True, slots=True)
class FsInfo:
    rtmax: int
    rtpref: int
    wtmax: int
    wtpref: int
    maxfilesize: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    count: int
    committed: int
    verifier: bytes


# ---------------------------------------------------------------------------
# Encoding (sans-IO)
# ---------------------------------------------------------------------------

def encode_mnt_args(export_path: str) -> bytes:
    packer = Packer()
    packer.pack_string(export_path, MNTPATHLEN)
    return packer.get_buffer()


def encode_fh_args(fh: bytes) -> bytes:
    """GETATTR3args / FSINFO3args: just the file handle."""
    packer = Packer()
    packer.pack_opaque(fh, NFS3_FHSIZE)
    return packer.get_buffer()


def encode_lookup_args(dir_fh: bytes, name: str) -> bytes:
    packer = Packer()
    packer.pack_opaque(dir_fh, NFS3_FHSIZE)
    packer.pack_string(name)
    return packer.get_buffer()


def _pack_sattr(packer: Packer, *, mode: int | None = None, size: int | None = None) -> None:
    """sattr3 setting only mode and/or size; uid/gid/times left unchanged."""
    packer.pack_optional(mode, packer.pack_uint)
    packer.pack_bool(False)  # uid
    packer.pack_bool(False)  # gid
    packer.pack_optional(size, packer.pack_uhyper)
    packer.pack_enum(0)  # atime: DONT_CHANGE
    packer.pack_enum(0)  # mtime: DONT_CHANGE


def encode_create_args(dir_fh: bytes, name: str, mode: int, how: CreateMode = CreateMode.GUARDED) -> bytes:
    if how == CreateMode.EXCLUSIVE:
        raise ValueError("EXCLUSIVE create is not supported by this client")
    packer = Packer()
    packer.pack_opaque(dir_fh, NFS3_FHSIZE)
    packer.pack_string(name)
    packer.pack_enum(how)
    _pack_sattr(packer, mode=mode)
    return packer.get_buffer()


def encode_setattr_size_args(fh: bytes, size: int) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh, NFS3_FHSIZE)
    _pack_sattr(packer, size=size)
    packer.pack_bool(False)  # sattrguard3: no ctime check
    return packer.get_buffer()


def encode_read_args(fh: bytes, offset: int, count: int) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh, NFS3_FHSIZE)
    packer.pack_uhyper(offset)
    packer.pack_uint(count)
    return packer.get_buffer()


def encode_write_args(fh: bytes, offset: int, data: bytes | memoryview, stable: StableHow) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh, NFS3_FHSIZE)
    packer.pack_uhyper(offset)
    packer.pack_uint(len(data))
    packer.pack_enum(stable)
    packer.pack_opaque(bytes(data) if isinstance(data, memoryview) else data)
    return packer.get_buffer()


def encode_commit_args(fh: bytes, offset: int = 0, count: int = 0) -> bytes:
    return encode_read_args(fh, offset, count)


# ---------------------------------------------------------------------------
# Decoding (sans-IO)
# ---------------------------------------------------------------------------

def _unpack_fattr(unpacker: Unpacker) -> Fattr:
    file_type = unpacker.unpack_enum()
    mode = unpacker.unpack_uint()
    unpacker.unpack_uint()  # nlink
    uid = unpacker.unpack_uint()
    gid = unpacker.unpack_uint()
    size = unpacker.unpack_uhyper()
    used = unpacker.unpack_uhyper()
    unpacker.unpack_fopaque_view(8)  # rdev
    unpacker.unpack_uhyper()  # fsid
    fileid = unpacker.unpack_uhyper()
    unpacker.unpack_fopaque_view(24)  # atime, mtime, ctime
    return Fattr(file_type, mode, uid, gid, size, used, fileid)


def _unpack_post_op_attr(unpacker: Unpacker) -> Fattr | None:
    return unpacker.unpack_optional(lambda: _unpack_fattr(unpacker))


def _skip_wcc_data(unpacker: Unpacker) -> Fattr | None:
    if unpacker.unpack_bool():
        unpacker.unpack_fopaque_view(24)  # size, mtime, ctime
    return _unpack_post_op_attr(unpacker)


def _status(unpacker: Unpacker, procedure: str, what: str = "") -> None:
    status = unpacker.unpack_enum()
    if status != NfsStat.OK:
        raise NfsError(procedure, status, what)


def decode_mnt_result(body: bytes, export_path: str = "") -> bytes:
    """The root file handle of an export, or NfsError('MNT', status)."""
    unpacker = Unpacker(body)
    status = unpacker.unpack_enum()
    if status != MountStat.OK:
        raise NfsError("MNT", status, export_path)
    fh = unpacker.unpack_opaque(NFS3_FHSIZE)
    unpacker.unpack_array(unpacker.unpack_int, max_count=64)  # auth flavors
    return fh


def decode_getattr_result(body: bytes) -> Fattr:
    unpacker = Unpacker(body)
    _status(unpacker, "GETATTR")
    return _unpack_fattr(unpacker)


def decode_lookup_result(body: bytes, name: str = "") -> tuple[bytes, Fattr | None]:
    unpacker = Unpacker(body)
    _status(unpacker, "LOOKUP", name)
    fh = unpacker.unpack_opaque(NFS3_FHSIZE)
    return fh, _unpack_post_op_attr(unpacker)


def decode_create_result(body: bytes, name: str = "") -> bytes | None:
    """The new file's handle when the server returned one (post_op_fh3)."""
    unpacker = Unpacker(body)
    _status(unpacker, "CREATE", name)
    return unpacker.unpack_optional(lambda: unpacker.unpack_opaque(NFS3_FHSIZE))


def decode_setattr_result(body: bytes) -> Fattr | None:
    unpacker = Unpacker(body)
    _status(unpacker, "SETATTR")
    return _skip_wcc_data(unpacker)


def decode_read_result(body: bytes) -> tuple[memoryview, bool]:
    """(data, eof); the data is a view into ``body``, not a copy."""
    unpacker = Unpacker(body)
    _status(unpacker, "READ")
    _unpack_post_op_attr(unpacker)
    count = unpacker.unpack_uint()
    eof = unpacker.unpack_bool()
    data = unpacker.unpack_opaque_view()
    if len(data) != count:
        raise XdrError(f"READ reply count {count} but {len(data)} data bytes")
    return data, eof


def decode_write_result(body: bytes) -> WriteResult:
    unpacker = Unpacker(body)
    _status(unpacker, "WRITE")
    _skip_wcc_data(unpacker)
    count = unpacker.unpack_uint()
    committed = unpacker.unpack_enum()
    verifier = unpacker.unpack_fopaque(NFS3_WRITEVERFSIZE)
    return WriteResult(count, committed, verifier)


def decode_commit_result(body: bytes) -> bytes:
    unpacker = Unpacker(body)
    _status(unpacker, "COMMIT")
    _skip_wcc_data(unpacker)
    return unpacker.unpack_fopaque(NFS3_WRITEVERFSIZE)


def decode_fsinfo_result(body: bytes) -> FsInfo:
    unpacker = Unpacker(body)
    _status(unpacker, "FSINFO")
    _unpack_post_op_attr(unpacker)
    rtmax, rtpref, _rtmult, wtmax, wtpref, _wtmult, _dtpref = (unpacker.unpack_uint() for _ in range(7))
    maxfilesize = unpacker.unpack_uhyper()
    return FsInfo(rtmax, rtpref, wtmax, wtpref, maxfilesize)


# ---------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------

RpcFactory = Callable[[int], object]  # port -> object with .call(prog, vers, proc, args) and .close()


def _default_rpc_factory(host: str, *, uid: int, gid: int, timeout: float) -> RpcFactory:
    from acmenfs.oncrpc.client import AuthSys, RpcClient  # noqa: PLC0415 (lead's module)

    reserved = hasattr(os, "geteuid") and os.geteuid() == 0

    def connect(port: int) -> object:
        return RpcClient(host, port, transport="tcp", timeout=timeout,
                         auth=AuthSys(uid=uid, gid=gid), reserved_port=reserved)

    return connect


class NfsClient:
    """Talks NFSv3 to one server; ``io_depth`` connections carry bulk I/O in parallel.

    Identity is AUTH_SYS ``uid``/``gid`` (subject to the export's squash rule).
    """

    def __init__(self, host: str, nfs_port: int, mount_port: int, *, uid: int = 0, gid: int = 0,
                 timeout: float = 60.0, io_depth: int = 4, io_size: int = DEFAULT_IO_SIZE,
                 rpc_factory: RpcFactory | None = None) -> None:
        if io_depth < 1:
            raise ValueError("io_depth must be at least 1")
        self.host = host
        self.nfs_port = nfs_port
        self.mount_port = mount_port
        self.io_depth = io_depth
        self.io_size = io_size
        self._connect = rpc_factory or _default_rpc_factory(host, uid=uid, gid=gid, timeout=timeout)
        self._nfs = self._connect(nfs_port)
        self._local = threading.local()
        self._pool_connections: list[object] = []
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        for connection in [self._nfs, *self._pool_connections]:
            connection.close()
        self._pool_connections.clear()

    def __enter__(self) -> "NfsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- single calls --------------------------------------------------------
    def _call(self, proc: NfsProc, args: bytes, connection: object | None = None) -> bytes:
        return (connection or self._nfs).call(NFS_PROGRAM, NFS_V3, proc, args)

    def mount(self, export_path: str) -> bytes:
        """MNT: the export's root handle (a MOUNT connection is opened and closed)."""
        connection = self._connect(self.mount_port)
        try:
            body = connection.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, encode_mnt_args(export_path))
        finally:
            connection.close()
        return decode_mnt_result(body, export_path)

    def getattr(self, fh: bytes) -> Fattr:
        return decode_getattr_result(self._call(NfsProc.GETATTR, encode_fh_args(fh)))

    def fsinfo(self, fh: bytes) -> FsInfo:
        return decode_fsinfo_result(self._call(NfsProc.FSINFO, encode_fh_args(fh)))

    def lookup(self, dir_fh: bytes, name: str) -> bytes:
        fh, _ = decode_lookup_result(self._call(NfsProc.LOOKUP, encode_lookup_args(dir_fh, name)), name)
        return fh

    def create(self, dir_fh: bytes, name: str, mode: int = 0o660,
               how: CreateMode = CreateMode.GUARDED) -> bytes:
        body = self._call(NfsProc.CREATE, encode_create_args(dir_fh, name, mode, how))
        fh = decode_create_result(body, name)
        return fh if fh is not None else self.lookup(dir_fh, name)

    def set_size(self, fh: bytes, size: int) -> None:
        decode_setattr_result(self._call(NfsProc.SETATTR, encode_setattr_size_args(fh, size)))

    def read(self, fh: bytes, offset: int, count: int, connection: object | None = None) -> tuple[bytes, bool]:
        data, eof = decode_read_result(self._call(NfsProc.READ, encode_read_args(fh, offset, count), connection))
        return bytes(data), eof

    def write(self, fh: bytes, offset: int, data: bytes, stable: StableHow = StableHow.UNSTABLE,
              connection: object | None = None) -> WriteResult:
        """One WRITE; short writes are completed by further WRITEs."""
        view = memoryview(data)
        result = WriteResult(0, StableHow.FILE_SYNC, b"")
        while view:
            result = decode_write_result(self._call(NfsProc.WRITE, encode_write_args(fh, offset, view, stable),
                                                    connection))
            if result.count == 0:
                raise NfsError("WRITE", NfsStat.IO, "server wrote 0 bytes")
            view = view[result.count:]
            offset += result.count
        return result

    def commit(self, fh: bytes) -> bytes:
        return decode_commit_result(self._call(NfsProc.COMMIT, encode_commit_args(fh)))

    # -- bulk I/O ------------------------------------------------------------
    def _pooled_connection(self) -> object:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect(self.nfs_port)
            self._local.connection = connection
            with self._pool_lock:
                self._pool_connections.append(connection)
        return connection

    def _chunk_size(self, fh: bytes, writing: bool) -> int:
        info = self.fsinfo(fh)
        server_max = info.wtmax if writing else info.rtmax
        return max(4096, min(self.io_size, server_max or self.io_size))

    def upload(self, fh: bytes, source: BinaryIO, length: int, *, skip_zeros: bool = False) -> int:
        """Write ``length`` bytes of ``source`` at offset 0, UNSTABLE + one COMMIT.

        With ``skip_zeros`` all-zero chunks are not sent: the caller guarantees
        the target range already reads as zeros (e.g. it was truncated).
        Returns the bytes actually sent. The write verifier must not change
        between the WRITEs and the COMMIT (a server restart): if it does, this
        raises rather than silently losing data.
        """
        chunk = self._chunk_size(fh, writing=True)
        verifiers: set[bytes] = set()
        sent = 0

        def write_chunk(offset: int, data: bytes) -> None:
            result = self.write(fh, offset, data, StableHow.UNSTABLE, self._pooled_connection())
            if result.committed == StableHow.UNSTABLE:
                verifiers.add(result.verifier)

        with ThreadPoolExecutor(max_workers=self.io_depth, thread_name_prefix="nfs-upload") as pool:
            pending = []
            for offset, data in _chunks_of(source, length, chunk):
                if skip_zeros and is_all_zeros(data):
                    continue
                pending.append(pool.submit(write_chunk, offset, data))
                sent += len(data)
                if len(pending) >= 2 * self.io_depth:
                    pending.pop(0).result()
            for future in pending:
                future.result()
        if verifiers:
            committed = self.commit(fh)
            if verifiers != {committed}:
                raise NfsError("COMMIT", NfsStat.IO, "write verifier changed: server restarted, data lost")
        return sent

    def download(self, fh: bytes, destination: BinaryIO, length: int, *, sparse: bool = False) -> int:
        """Read ``length`` bytes from offset 0 into ``destination`` (seekable file).

        With ``sparse`` all-zero chunks are skipped with a seek (the caller
        truncates the destination to ``length`` afterwards). Returns bytes read.
        """
        chunk = self._chunk_size(fh, writing=False)

        def read_chunk(offset: int) -> tuple[int, bytes]:
            wanted = min(chunk, length - offset)
            data, eof = self.read(fh, offset, wanted, self._pooled_connection())
            if len(data) < wanted and not eof:
                rest, _ = self.read(fh, offset + len(data), wanted - len(data), self._pooled_connection())
                data += rest
            return offset, data

        received = 0
        with ThreadPoolExecutor(max_workers=self.io_depth, thread_name_prefix="nfs-download") as pool:
            pending = []
            offsets = iter(range(0, length, chunk))
            for offset in offsets:
                pending.append(pool.submit(read_chunk, offset))
                if len(pending) >= 2 * self.io_depth:
                    received += _store(destination, *pending.pop(0).result(), sparse=sparse)
            for future in pending:
                received += _store(destination, *future.result(), sparse=sparse)
        destination.truncate(length)
        return received


def _chunks_of(source: BinaryIO, length: int, chunk: int) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset < length:
        data = source.read(min(chunk, length - offset))
        if not data:
            break
        yield offset, data
        offset += len(data)


def _store(destination: BinaryIO, offset: int, data: bytes, *, sparse: bool) -> int:
    if not (sparse and is_all_zeros(data)):
        destination.seek(offset)
        destination.write(data)
    return len(data)


_ZEROS = bytes(DEFAULT_IO_SIZE)


def is_all_zeros(data: bytes) -> bool:
    """True when every byte is zero (memcmp against a zero block when sizes match)."""
    if len(data) == len(_ZEROS):
        return data == _ZEROS
    return data.count(0) == len(data)


def is_regular_file(attributes: Fattr) -> bool:
    return attributes.type == FileType.REG
