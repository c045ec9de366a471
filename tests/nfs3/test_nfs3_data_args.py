"""READ3args / WRITE3args decoders (``acmenfs.nfs3.xdr.decode_read_args`` / ``decode_write_args``),
sans-IO with bytes: the values, the data as a view into the record, and every truncation an XdrError."""

from __future__ import annotations

import struct

import pytest

from acmenfs.nfs3.xdr import decode_read_args, decode_write_args
from acmenfs.oncrpc.xdr import Unpacker, XdrError

FH = struct.pack(">I", 8) + b"handle!!"


def write_args(offset: int, count: int, stable: int, data: bytes, declared: int | None = None) -> bytes:
    length = len(data) if declared is None else declared
    return FH + struct.pack(">QIII", offset, count, stable, length) + data + b"\0" * (-len(data) & 3)


def test_write_args_decode_with_the_data_as_a_view_of_the_record():
    record = bytearray(write_args(1 << 40, 5, 2, b"hello") + b"NEXT")
    args = Unpacker(record)
    fh, offset, count, stable, data = decode_write_args(args)
    assert (fh, offset, count, stable, bytes(data)) == (b"handle!!", 1 << 40, 5, 2, b"hello")
    assert type(data) is memoryview and data.obj is record  # not copied
    assert args.remaining() == 4  # past the padding


@pytest.mark.parametrize("record", [
    FH + struct.pack(">QII", 0, 5, 0),                                 # no data length
    write_args(0, 5, 0, b"hello")[:-4],                                # data cut short
    write_args(0, 5, 0, b"hello")[:-1],                                # padding cut short
    write_args(0, 4096, 0, b"abcd", declared=4096),                    # declares more than the record holds
    struct.pack(">I", 65) + b"x" * 68 + struct.pack(">QIII", 0, 0, 0, 0),  # handle over NFS3_FHSIZE
])
def test_truncated_or_oversized_write_args_are_xdr_errors(record):
    with pytest.raises(XdrError):
        decode_write_args(Unpacker(record))


def test_read_args_decode_and_truncation():
    assert decode_read_args(Unpacker(FH + struct.pack(">QI", 12345, 4096))) == (b"handle!!", 12345, 4096)
    with pytest.raises(XdrError):
        decode_read_args(Unpacker(FH + struct.pack(">Q", 12345)))
