"""XDR codec: round trips, exact bytes from RFC 4506 examples, and refusals of bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from acmenfs.oncrpc.xdr import Packer, Unpacker, XdrError, padding


def test_integers_are_big_endian_words():
    packer = Packer()
    packer.pack_uint(1)
    packer.pack_int(-2)
    packer.pack_uhyper(2**40 + 3)
    packer.pack_hyper(-1)
    packer.pack_bool(True)
    assert packer.get_buffer() == (
        b"\0\0\0\x01" + b"\xff\xff\xff\xfe" + b"\0\0\x01\0\0\0\0\x03" + b"\xff" * 8 + b"\0\0\0\x01")


def test_opaque_and_string_are_padded_to_four_bytes():
    packer = Packer()
    packer.pack_opaque(b"abcde")
    packer.pack_string("hi")
    packer.pack_fopaque(3, b"xyz")
    assert packer.get_buffer() == (
        b"\0\0\0\x05abcde\0\0\0" b"\0\0\0\x02hi\0\0" b"xyz\0")


@given(st.lists(st.one_of(
    st.tuples(st.just("uint"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("int"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("uhyper"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("hyper"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("opaque"), st.binary(max_size=40)),
    st.tuples(st.just("string"), st.text(max_size=20)),
), max_size=20))
def test_round_trip(values):
    packer = Packer()
    for kind, value in values:
        getattr(packer, f"pack_{kind}")(value)
    data = packer.get_buffer()
    assert len(data) % 4 == 0
    unpacker = Unpacker(data)
    for kind, value in values:
        assert getattr(unpacker, f"unpack_{kind}")() == value
    unpacker.done()


def test_arrays_and_optionals_round_trip():
    packer = Packer()
    packer.pack_array([1, 2, 3], packer.pack_uint)
    packer.pack_optional(None, packer.pack_uint)
    packer.pack_optional(7, packer.pack_uint)
    unpacker = Unpacker(packer.get_buffer())
    assert unpacker.unpack_array(unpacker.unpack_uint) == [1, 2, 3]
    assert unpacker.unpack_optional(unpacker.unpack_uint) is None
    assert unpacker.unpack_optional(unpacker.unpack_uint) == 7
    unpacker.done()


@pytest.mark.parametrize("data, reader", [
    (b"\0\0\0", "unpack_uint"),
    (b"\0\0\0\x08abcd", "unpack_opaque"),
    (b"\0\0\0\x02", "unpack_bool"),
    (b"\xff\xff\xff\xff", "unpack_opaque"),
])
def test_truncated_or_invalid_input_raises_xdr_error(data, reader):
    with pytest.raises(XdrError):
        getattr(Unpacker(data), reader)()


def test_forged_lengths_are_refused_before_allocation():
    unpacker = Unpacker(b"\x7f\xff\xff\xff")
    with pytest.raises(XdrError, match="exceeds limit"):
        unpacker.unpack_opaque(max_length=1024)
    with pytest.raises(XdrError, match="too few bytes"):
        Unpacker(b"\x10\0\0\0").unpack_array(lambda: 0)


def test_trailing_bytes_are_an_error_when_checked():
    unpacker = Unpacker(b"\0\0\0\x01\0\0\0\x02")
    unpacker.unpack_uint()
    with pytest.raises(XdrError, match="trailing"):
        unpacker.done()


def test_out_of_range_values_are_refused_when_packing():
    with pytest.raises(XdrError):
        Packer().pack_uint(-1)
    with pytest.raises(XdrError):
        Packer().pack_int(2**31)
    with pytest.raises(XdrError):
        Packer().pack_fopaque(4, b"abc")


def test_padding():
    assert [padding(n) for n in range(6)] == [0, 3, 2, 1, 0, 3]


def test_unpack_opaque_view_does_not_copy():
    data = bytearray(b"\0\0\0\x04abcd")
    view = Unpacker(data).unpack_opaque_view()
    data[4] = ord("z")
    assert bytes(view) == b"zbcd"


def test_discriminated_unions_round_trip_and_refuse_unknown_arms():
    packer = Packer()
    packer.pack_union(0, lambda: packer.pack_string("ok"))
    packer.pack_union(5, None)
    packer.pack_union(7, None)
    unpacker = Unpacker(packer.get_buffer())
    arms = {0: unpacker.unpack_string, 5: None}
    assert unpacker.unpack_union(arms) == (0, "ok")
    assert unpacker.unpack_union(arms) == (5, None)
    with pytest.raises(XdrError, match="no arm"):
        unpacker.unpack_union(arms)
    assert Unpacker(b"\0\0\0\x07").unpack_union(arms, default=None) == (7, None)
