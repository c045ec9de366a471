"""NFSv4.2 ops for VM images (sans-IO): SEEK data/hole, ALLOCATE, DEALLOCATE (punch hole), CLONE
(OK with equal bytes where the file system can, else NOTSUPP), their error paths, the 4.2
attributes, and that 4.2 ops are illegal in 4.0/4.1.  SEQUENCE is B's: a stub that accepts
every COMPOUND stands in for it here."""

from __future__ import annotations

import os
import struct

import pytest

from acmenfs.nfs4.compound import OpSpec
from nfs4_core_helpers import (
    SEQUENCE_STUB_BODY, allocate, clone, deallocate, getattr_, lookup, putrootfh, savefh, seek, u32,
)

OK, INVAL, ISDIR, NXIO, ROFS, NOTSUPP, OP_ILLEGAL, XDEV = 0, 22, 21, 6, 30, 10004, 10044, 18
DATA, HOLE = 0, 1
MIB = 1024 * 1024


@pytest.fixture
def v42(v4, monkeypatch):
    monkeypatch.setitem(v4.nfs4.ops, 53, OpSpec("SEQUENCE", lambda cs, args: (args.unpack_fopaque(32), SEQUENCE_STUB_BODY)[1]))
    return v4


def run(v42, path, *ops):
    body = [u32(53) + b"\0" * 32, putrootfh()] + [lookup(p) for p in path.split("/") if p] + list(ops)
    return v42.compound(body, minor=2)


def sparse(path, size=4 * MIB, data_at=(MIB,)):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in data_at:
            f.seek(offset)
            f.write(b"D" * 4096)


def test_seek_data_and_hole(v42, export_dir):
    sparse(export_dir / "img")
    reply = run(v42, "/e/img", seek(0, DATA))
    eof, offset = reply.results[-1].value
    assert reply.status == OK and offset == MIB and not eof
    eof, offset = run(v42, "/e/img", seek(MIB, HOLE)).results[-1].value
    assert offset == MIB + 4096 and not eof
    eof, offset = run(v42, "/e/img", seek(2 * MIB, DATA)).results[-1].value
    assert eof                                            # no data after 2 MiB
    assert run(v42, "/e/img", seek(4 * MIB, DATA)).status == NXIO
    assert run(v42, "/e", seek(0, DATA)).status == ISDIR


def test_allocate_and_deallocate(v42, export_dir):
    (export_dir / "f").write_bytes(b"x" * (2 * MIB))
    reply = run(v42, "/e/f", deallocate(0, MIB))
    assert reply.status == OK
    data = (export_dir / "f").read_bytes()
    assert len(data) == 2 * MIB and data[:MIB] == b"\0" * MIB and data[MIB:] == b"x" * MIB
    assert os.stat(export_dir / "f").st_blocks * 512 <= MIB + 64 * 1024
    (export_dir / "g").write_bytes(b"")
    assert run(v42, "/e/g", allocate(0, 3 * MIB)).status == OK
    st = os.stat(export_dir / "g")
    assert st.st_size == 3 * MIB and st.st_blocks * 512 >= 3 * MIB
    assert run(v42, "/e/g", allocate(0, 0)).status == INVAL
    assert run(v42, "/ro/secret", deallocate(0, 1)).status == ROFS


def test_clone_copies_the_range_or_is_notsupp(v42, export_dir):
    (export_dir / "src").write_bytes(os.urandom(8192))
    (export_dir / "dst").write_bytes(b"")
    reply = run(v42, "/e/src", savefh(), u32(24), lookup("e"), lookup("dst"), clone(0, 0, 8192))
    assert reply.status in (OK, NOTSUPP)
    if reply.status == OK:
        assert (export_dir / "dst").read_bytes() == (export_dir / "src").read_bytes()
    reply = run(v42, "/e/src", savefh(), u32(24), lookup("ro"), lookup("secret"), clone(0, 0, 1))
    assert reply.status in (XDEV, ROFS)


def test_42_ops_are_illegal_in_40_and_41(v42, export_dir):
    (export_dir / "f").write_text("x")
    reply = v42.compound([putrootfh(), lookup("e"), lookup("f"), seek(0, DATA)], minor=0)
    assert (reply.results[-1].op, reply.results[-1].status) == (10044, OP_ILLEGAL)
    reply = v42.compound([u32(53) + b"\0" * 32, putrootfh(), lookup("e"), lookup("f"), seek(0, DATA)], minor=1)
    assert (reply.results[-1].op, reply.results[-1].status) == (10044, OP_ILLEGAL)


def test_42_attributes(v42, export_dir):
    (export_dir / "f").write_bytes(b"x" * 8192)
    reply = run(v42, "/e/f", getattr_(75, 77, 78, 79))
    present, data = reply.results[-1].value
    assert present == {75, 77, 78, 79}
    words = struct.unpack_from(">I", data)[0]
    offset = 4 + 4 * words
    clone_blksize, space_freed, change_type = struct.unpack_from(">IQI", data, offset)
    assert clone_blksize == 4096 and space_freed == os.stat(export_dir / "f").st_blocks * 512 and change_type == 3


def test_clone_on_btrfs_shares_the_range_and_checks_alignment(btrfs_mount, tmp_path, monkeypatch):
    from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
    from nfs4_core_helpers import Sans4
    directory = btrfs_mount / "export"
    directory.mkdir()
    source = os.urandom(64 * 1024)
    (directory / "base.img").write_bytes(source)
    (directory / "vm.img").write_bytes(b"\0" * (128 * 1024))
    server = Sans4(ExportTable([Export("/b", str(directory), rules=(ClientRule("*", squash="none"),))]),
                   tmp_path / "state")
    try:
        monkeypatch.setitem(server.nfs4.ops, 53, OpSpec("SEQUENCE", lambda cs, args: (args.unpack_fopaque(32), SEQUENCE_STUB_BODY)[1]))
        reply = run(server, "/b/base.img", savefh(), u32(24), lookup("b"), lookup("vm.img"),
                    clone(0, 64 * 1024, 64 * 1024))
        assert reply.status == OK, reply
        data = (directory / "vm.img").read_bytes()
        assert data[64 * 1024:] == source and data[:64 * 1024] == b"\0" * (64 * 1024)
        reply = run(server, "/b/base.img", savefh(), u32(24), lookup("b"), lookup("vm.img"), clone(1, 0, 4096))
        assert reply.status == INVAL                     # not block-aligned
    finally:
        server.close()
