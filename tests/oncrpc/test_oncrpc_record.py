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


def test_a_large_record_in_progress_is_received_up_to_its_end_only():
    payload = bytes(range(256)) * 4096  # 1 MiB
    reader = RecordReader(max_record_size=2 << 20, buffer_size=4 << 20)  # room for more than the record
    stream = encode_record(payload, len(payload)) + encode_record(b"next", 4)
    buffer = reader.get_buffer()
    buffer[:1000] = stream[:1000]
    assert reader.buffer_updated(1000) == []
    buffer = reader.get_buffer()
    assert len(buffer) == 4 + len(payload) - 1000  # not a byte of the next record
    buffer[:] = stream[1000:4 + len(payload)]
    (record,) = reader.buffer_updated(len(buffer))
    assert bytes(record) == payload and not reader.has_partial
    assert feed(reader, stream[4 + len(payload):], []) == [b"next"]
    assert bytes(record) == payload  # the view was not overwritten by what came after


def test_a_stream_of_large_records_survives_any_cut_and_each_lands_in_one_buffer():
    payloads = [bytes([n]) * (300 * 1024 + n) for n in range(4)] + [b"small", bytes(range(256)) * 1100]
    stream = b"".join(encode_record(p, len(p)) for p in payloads)
    for cuts in ([], [3, 307203, 307300, 900000], list(range(1, len(stream), 99991))):
        reader = RecordReader(max_record_size=2 << 20)
        assert feed(reader, stream, cuts) == payloads
    reader = RecordReader(max_record_size=2 << 20)
    feed(reader, encode_record(payloads[0], len(payloads[0])), [])  # one large record pinned its buffer
    header_and_start = encode_record(payloads[1], len(payloads[1]))[:5000]
    buffer = reader.get_buffer()
    buffer[:5000] = header_and_start
    reader.buffer_updated(5000)
    rest = reader.get_buffer()
    assert rest.obj is buffer.obj  # the buffer was sized for it after the last one: no move, no copy
    assert len(rest) == 4 + len(payloads[1]) - 5000
