"""XDR (RFC 4506) encoding and decoding.

Owns the byte-level representation of XDR primitive types: 32/64-bit integers,
enums, booleans, fixed and variable opaque data, strings, arrays and optionals.
It does no I/O and knows nothing of RPC or NFS; the layers above compose these
primitives into their own structures.

Hot-path design: ``Packer`` appends to one ``bytearray`` using precompiled
``struct.Struct`` objects; ``Unpacker`` walks a ``memoryview`` with an offset and
never copies opaque data unless asked (``unpack_opaque_view``).  Every decode
error raises ``XdrError`` (a ``ValueError``), which the RPC layer turns into
GARBAGE_ARGS.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

UINT32 = struct.Struct(">I")
INT32 = struct.Struct(">i")
UINT64 = struct.Struct(">Q")
INT64 = struct.Struct(">q")
TWO_UINT32 = struct.Struct(">II")

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class XdrError(ValueError):
    """Raised when bytes cannot be decoded as the expected XDR type."""


def padding(length: int) -> int:
    """Number of zero bytes that follow ``length`` bytes of opaque data."""
    return (4 - (length & 3)) & 3


class Packer:
    """Accumulates XDR-encoded values in a single ``bytearray``."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def get_buffer(self) -> bytes:
        return bytes(self.buffer)

    def __len__(self) -> int:
        return len(self.buffer)

    def pack_uint(self, value: int) -> None:
        try:
            self.buffer += UINT32.pack(value)
        except struct.error as exc:
            raise XdrError(f"uint32 out of range: {value!r}") from exc

    def pack_int(self, value: int) -> None:
        try:
            self.buffer += INT32.pack(value)
        except struct.error as exc:
            raise XdrError(f"int32 out of range: {value!r}") from exc

    pack_enum = pack_int

    def pack_bool(self, value: bool) -> None:
        self.buffer += UINT32.pack(1 if value else 0)

    def pack_uhyper(self, value: int) -> None:
        try:
            self.buffer += UINT64.pack(value)
        except struct.error as exc:
            raise XdrError(f"uint64 out of range: {value!r}") from exc

    def pack_hyper(self, value: int) -> None:
        try:
            self.buffer += INT64.pack(value)
        except struct.error as exc:
            raise XdrError(f"int64 out of range: {value!r}") from exc

    def pack_fopaque(self, size: int, data: bytes) -> None:
        """Fixed-length opaque: exactly ``size`` bytes, then padding."""
        if len(data) != size:
            raise XdrError(f"fixed opaque needs {size} bytes, got {len(data)}")
        self.buffer += data
        self.buffer += _PAD[size & 3]

    def pack_opaque(self, data: bytes, max_length: int | None = None) -> None:
        """Variable-length opaque: length word, bytes, padding."""
        length = len(data)
        if max_length is not None and length > max_length:
            raise XdrError(f"opaque of {length} bytes exceeds limit {max_length}")
        self.buffer += UINT32.pack(length)
        self.buffer += data
        self.buffer += _PAD[length & 3]

    def pack_string(self, value: str | bytes, max_length: int | None = None) -> None:
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        self.pack_opaque(value, max_length)

    def pack_array(self, items: Iterable[T], pack_item: Callable[[T], None]) -> None:
        """Variable-length array: count, then each item."""
        items = list(items)
        self.buffer += UINT32.pack(len(items))
        for item in items:
            pack_item(item)

    def pack_optional(self, item: T | None, pack_item: Callable[[T], None]) -> None:
        """XDR optional-data (``*T``): a bool, then the value when present."""
        if item is None:
            self.buffer += UINT32.pack(0)
        else:
            self.buffer += UINT32.pack(1)
            pack_item(item)

    def pack_union(self, discriminant: int, arm: Callable[[], None] | None) -> None:
        """Discriminated union: the discriminant, then the chosen arm (``None`` = void arm)."""
        self.pack_int(discriminant)
        if arm is not None:
            arm()

    def pack_raw(self, data: bytes) -> None:
        """Append already-encoded XDR bytes."""
        self.buffer += data


class Unpacker:
    """Decodes XDR values from a buffer, advancing an offset.

    ``limit`` bounds how long a variable-length item may claim to be before its
    bytes are even looked at, so a forged length cannot cause a large
    allocation.
    """

    __slots__ = ("view", "offset", "end")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        if type(data) is bytes:  # the common case; a view of bytes is always flat unsigned bytes
            view = memoryview(data)
        else:
            view = data if isinstance(data, memoryview) else memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
        self.view = view
        self.offset = offset
        self.end = len(view)

    def remaining(self) -> int:
        return self.end - self.offset

    def done(self) -> None:
        """Assert that every byte was consumed (trailing garbage is an error)."""
        if self.offset != self.end:
            raise XdrError(f"{self.end - self.offset} unexpected trailing bytes")

    def _need(self, count: int) -> int:
        start = self.offset
        if count < 0 or start + count > self.end:
            raise XdrError(
                f"truncated data: need {count} bytes at offset {start}, "
                f"have {self.end - start}"
            )
        self.offset = start + count
        return start

    def unpack_uint(self) -> int:
        start = self._need(4)
        return UINT32.unpack_from(self.view, start)[0]

    def unpack_int(self) -> int:
        start = self._need(4)
        return INT32.unpack_from(self.view, start)[0]

    unpack_enum = unpack_int

    def unpack_bool(self) -> bool:
        value = self.unpack_uint()
        if value > 1:
            raise XdrError(f"bad boolean value {value}")
        return value == 1

    def unpack_uhyper(self) -> int:
        start = self._need(8)
        return UINT64.unpack_from(self.view, start)[0]

    def unpack_hyper(self) -> int:
        start = self._need(8)
        return INT64.unpack_from(self.view, start)[0]

    def unpack_fopaque_view(self, size: int) -> memoryview:
        start = self._need(size + padding(size))
        return self.view[start : start + size]

    def unpack_fopaque(self, size: int) -> bytes:
        return bytes(self.unpack_fopaque_view(size))

    def unpack_opaque_view(self, max_length: int | None = None) -> memoryview:
        """Variable-length opaque without copying the payload."""
        length = self.unpack_uint()
        if max_length is not None and length > max_length:
            raise XdrError(f"opaque of {length} bytes exceeds limit {max_length}")
        return self.unpack_fopaque_view(length)

    def unpack_opaque(self, max_length: int | None = None) -> bytes:
        return bytes(self.unpack_opaque_view(max_length))

    def unpack_string(self, max_length: int | None = None) -> str:
        data = self.unpack_opaque_view(max_length)
        return str(data, "utf-8", "surrogateescape")

    def unpack_array(
        self, unpack_item: Callable[[], T], max_count: int | None = None
    ) -> list[T]:
        count = self.unpack_uint()
        if max_count is not None and count > max_count:
            raise XdrError(f"array of {count} items exceeds limit {max_count}")
        # Each item takes at least 4 bytes: reject impossible counts up front.
        if count * 4 > self.end - self.offset:
            raise XdrError(f"array claims {count} items, too few bytes remain")
        return [unpack_item() for _ in range(count)]

    def unpack_optional(self, unpack_item: Callable[[], T]) -> T | None:
        return unpack_item() if self.unpack_bool() else None

    def unpack_union(self, arms: dict[int, Callable[[], T] | None],
                     default: Callable[[], T] | None | bool = False) -> tuple[int, T | None]:
        """Discriminated union: returns (discriminant, arm value); a ``None`` arm is void.

        A discriminant without an arm uses ``default``; with no default it is an error.
        """
        discriminant = self.unpack_int()
        arm = arms.get(discriminant, default)
        if arm is False:
            raise XdrError(f"union discriminant {discriminant} has no arm")
        return discriminant, (arm() if arm is not None else None)
