"""Record marking: reassembly of fragments however the stream is cut, limits, framing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from acmenfs.oncrpc.record import LAST_FRAGMENT, RecordReader, RecordTooLarge, frame_record


def encode_record(payload: bytes, fragment_size: int) -> bytes:
    out = bytearray()
    chunks = [payload[i:i + fragment_size] for i in range(0, len(payload), fragment_size)] or [b""]
    for index, chunk in enumerate(chunks):
        flag = LAST_FRAGMENT if index == len(chunks) - 1 else 0
        out += struct.pack(">I", flag | len(chunk)) + chunk
    return bytes(out)


def feed(reader: RecordReader, data: bytes, cuts: list[int]) -> list[bytes]:
    records = []
    position = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        while position < cut:
            buffer = reader.get_buffer()
            n = min(len(buffer), cut - position)
            buffer[:n] = data[position:position + n]
            position += n
            records += [bytes(r) for r in reader.buffer_updated(n)]
    return records


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6),
    fragment_size=st.integers(1, 4000),
    cuts=st.lists(st.integers(0, 30000), max_size=12),
)
def test_records_survive_any_fragmentation_and_any_cut(payloads, fragment_size, cuts):
    stream = b"".join(encode_record(p, fragment_size) for p in payloads)
    reader = RecordReader(max_record_size=1 << 20)
    assert feed(reader, stream, cuts) == payloads
    assert not reader.has_partial


def test_large_single_fragment_record_is_passed_as_a_view_and_buffer_is_not_reused():
    payload = bytes(range(256)) * 4096  # 1 MiB
    reader = RecordReader(max_record_size=2 << 20)
    records = feed(reader, encode_record(payload, len(payload)) * 2, [100, 70000, 1048600])
    assert records == [payload, payload]


def test_oversized_header_is_refused_before_the_body_arrives():
    reader = RecordReader(max_record_size=1000)
    buffer = reader.get_buffer()
    buffer[:4] = struct.pack(">I", LAST_FRAGMENT | 1001)
    with pytest.raises(RecordTooLarge):
        reader.buffer_updated(4)


def test_fragments_adding_up_past_the_limit_are_refused():
    reader = RecordReader(max_record_size=1000)
    data = struct.pack(">I", 600) + b"a" * 600 + struct.pack(">I", LAST_FRAGMENT | 600)
    with pytest.raises(RecordTooLarge):
        feed(reader, data, [])


def test_partial_record_is_reported():
    reader = RecordReader(max_record_size=1000)
    feed(reader, struct.pack(">I", LAST_FRAGMENT | 10) + b"abc", [])
    assert reader.has_partial


@given(st.lists(st.binary(max_size=50), max_size=5), st.integers(1, 64))
def test_frame_record_splits_and_reassembles(parts, max_fragment):
    framed = frame_record(parts, max_fragment)
    stream = b"".join(bytes(p) for p in framed)
    reader = RecordReader(max_record_size=1 << 16)
    assert feed(reader, stream, []) == [b"".join(parts)]
