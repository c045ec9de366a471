"""read_parts: a backend read result (copied bytearray, or a node) as READ reply parts, for NFSv3 and NFSv4."""

from __future__ import annotations

import os

from acmenfs.oncrpc.dispatch import FileRegion
from acmenfs.oncrpc.read_parts import read_parts


class FileBackend:
    """The one backend method read_parts uses, over a real file."""

    def __init__(self, path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.calls = 0

    def read_bytes(self, node, offset: int, count: int) -> bytearray:
        self.calls += 1
        return bytearray(os.pread(self.fd, count, offset))


class Node:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_copied_read_is_sent_as_is_with_padding_only_when_needed(tmp_path):
    backend = FileBackend(_file(tmp_path, b"x" * 16))
    assert read_parts(backend, bytearray(b"abcd"), 0, 4, False, inline=True) == ([bytearray(b"abcd")], 4, False)
    parts, count, eof = read_parts(backend, bytearray(b"abcde"), 0, 5, True, inline=True)
    assert parts == [bytearray(b"abcde"), b"\0\0\0"] and (count, eof) == (5, True)
    assert backend.calls == 0


def test_inline_node_read_becomes_a_file_region(tmp_path):
    path = _file(tmp_path, b"0123456789")
    backend = FileBackend(path)
    node = Node(backend.fd)
    parts, count, eof = read_parts(backend, node, 2, 6, False, inline=True)
    assert type(parts[0]) is FileRegion and (parts[0].offset, parts[0].count) == (2, 6)
    assert parts[0].read() == b"234567" and parts[1:] == [b"\0\0"] and (count, eof) == (6, False)
    assert backend.calls == 0


def test_pool_read_copies_and_a_short_read_lowers_count_and_sets_eof(tmp_path):
    path = _file(tmp_path, b"0123456789")
    backend = FileBackend(path)
    node = Node(backend.fd)
    assert read_parts(backend, node, 0, 8, False, inline=False) == ([bytearray(b"01234567")], 8, False)
    os.truncate(path, 7)  # the file shrank after backend.read measured it
    parts, count, eof = read_parts(backend, node, 4, 4, False, inline=False)
    assert parts == [bytearray(b"456"), b"\0"] and (count, eof) == (3, True)


def test_empty_read_has_no_parts(tmp_path):
    backend = FileBackend(_file(tmp_path, b""))
    assert read_parts(backend, Node(backend.fd), 0, 0, True, inline=False) == ([], 0, True)
    assert read_parts(backend, Node(backend.fd), 0, 0, True, inline=True) == ([], 0, True)
    assert backend.calls == 0


def _file(tmp_path, data: bytes):
    path = tmp_path / "f"
    path.write_bytes(data)
    return path
