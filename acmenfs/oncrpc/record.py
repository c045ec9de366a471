"""RPC record marking over byte streams (RFC 5531 section 11), sans-IO.

Owns the reassembly of records from fragments on the receive side and the
framing of replies on the send side. ``RecordReader`` is written for
``asyncio.BufferedProtocol``: the kernel receives straight into the buffer it
hands out, a large single-fragment record (a 1 MiB WRITE) is passed up as a
``memoryview`` of that buffer without a copy, and a record-length header above
the limit is refused before anything is allocated for it.
"""

from __future__ import annotations

import struct

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF
_HEADER = struct.Struct(">I")

# Records smaller than this are copied out so the receive buffer can be reused;
# larger ones are handed up as views and the buffer is retired.
_COPY_BELOW = 64 * 1024
_MIN_FREE = 64 * 1024
# While a fragment at least this large is arriving, the kernel is asked for its bytes only, not
# for the next record's: the buffer it then pins holds nothing to copy into a fresh one.
_EXACT_RECEIVE_FROM = 256 * 1024


class RecordTooLarge(ValueError):
    """A fragment header announced more bytes than the configured limit."""


class RecordReader:
    """Reassembles complete records from a stream of record-marked fragments."""

    def __init__(self, max_record_size: int, buffer_size: int = 256 * 1024) -> None:
        if max_record_size <= 0:
            raise ValueError("max_record_size must be positive")
        self.max_record_size = max_record_size
        self._default_size = buffer_size
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._need = 0  # bytes needed from _start for the next complete fragment
        self._fragments: bytearray | None = None
        self._last_pinned = 0  # length of the last record handed up as a view (sizes the next buffer)

    @property
    def has_partial(self) -> bool:
        """True while part of a record has arrived but not all of it."""
        return self._end > self._start or self._fragments is not None

    @property
    def buffered(self) -> int:
        return self._end - self._start + (len(self._fragments) if self._fragments else 0)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable space for the next received bytes (up to the end of a large fragment in progress)."""
        need = self._need
        want = max(need, self._end - self._start + _MIN_FREE)
        if self._start + want > len(self._buf):
            self._make_room(want)
        if need >= _EXACT_RECEIVE_FROM:
            return self._view[self._end:self._start + need]
        return self._view[self._end:]

    def _make_room(self, want: int) -> None:
        if want <= len(self._buf) and self._start > 0:
            pending = self._end - self._start
            self._buf[:pending] = self._buf[self._start:self._end]
            self._start, self._end = 0, pending
        else:
            self._move_to_new_buffer(max(self._default_size, want))

    def _move_to_new_buffer(self, size: int) -> None:
        """Continue in a fresh buffer holding the bytes not yet consumed."""
        pending = self._end - self._start
        fresh = bytearray(size)
        fresh[:pending] = self._view[self._start:self._end]
        self._buf = fresh
        self._view = memoryview(fresh)
        self._start = 0
        self._end = pending

    def buffer_updated(self, nbytes: int) -> list:
        """Account for ``nbytes`` received; return the records now complete.

        Raises ``RecordTooLarge`` when a record would exceed the limit.
        """
        self._end += nbytes
        records: list = []
        pinned = False
        buf, view = self._buf, self._view
        while True:
            available = self._end - self._start
            if available < 4:
                self._need = 4
                break
            header = _HEADER.unpack_from(buf, self._start)[0]
            length = header & MAX_FRAGMENT
            so_far = len(self._fragments) if self._fragments is not None else 0
            if so_far + length > self.max_record_size:
                raise RecordTooLarge(
                    f"record of at least {so_far + length} bytes exceeds the limit of "
                    f"{self.max_record_size}")
            if available < 4 + length:
                self._need = 4 + length
                break
            first = self._start + 4
            self._start = first + length
            payload = view[first:first + length]
            if header & LAST_FRAGMENT and self._fragments is None:
                if length < _COPY_BELOW:
                    records.append(bytes(payload))
                else:
                    records.append(payload)
                    pinned = True
                    self._last_pinned = length
            else:
                if self._fragments is None:
                    self._fragments = bytearray()
                self._fragments += payload
                if header & LAST_FRAGMENT:
                    records.append(self._fragments)
                    self._fragments = None
        if pinned:
            self._retire_buffer()
        elif self._start == self._end:
            self._start = self._end = 0
        return records

    def _retire_buffer(self) -> None:
        """Leave the current buffer to the records viewing it; continue in a new one, large enough
        for another record as large as the last one viewed, with room to spare (a stream of 1 MiB WRITEs then lands
        each record in its own buffer, never moved)."""
        pending = self._end - self._start
        self._move_to_new_buffer(max(self._default_size, self._need, pending + _MIN_FREE,
                                     pending + _MIN_FREE + self._last_pinned))


def frame_record(parts: list, max_fragment: int = MAX_FRAGMENT) -> list:
    """Prefix record-marking headers to a reply made of ``parts``.

    Returns a new list of parts. With the default limit the reply is a single
    fragment (one header word). Parts may be buffers or objects with ``__len__``
    (file regions); a smaller ``max_fragment`` splits buffers across fragments.
    """
    total = sum(len(p) for p in parts)
    if total <= max_fragment:
        return [_HEADER.pack(LAST_FRAGMENT | total), *parts]
    framed: list = []
    remaining = total
    current: list = []
    room = min(max_fragment, remaining)
    framed_len = room
    for part in parts:
        offset = 0
        size = len(part)
        while offset < size:
            take = min(room, size - offset)
            if take == size and offset == 0:
                current.append(part)
            elif isinstance(part, (bytes, bytearray, memoryview)):
                current.append(memoryview(part)[offset:offset + take])
            else:
                current.append(bytes(memoryview(part.read())[offset:offset + take]))
            offset += take
            room -= take
            if room == 0:
                remaining -= framed_len
                flag = LAST_FRAGMENT if remaining == 0 else 0
                framed.append(_HEADER.pack(flag | framed_len))
                framed.extend(current)
                current = []
                room = framed_len = min(max_fragment, remaining)
    return framed
