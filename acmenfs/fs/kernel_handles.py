"""Kernel file handles: ``name_to_handle_at`` / ``open_by_handle_at`` through ctypes.

Owns turning an object (directory fd + name) into the file system's own
persistent handle bytes, and opening such bytes again.  These handles survive
restarts and remounts, include the btrfs subvolume id, and make a deleted
object answer ESTALE.  Opening needs CAP_DAC_READ_SEARCH (root); ``available()``
says whether this process can use them.  It must not decide anything about NFS
or exports.

Encoding of the returned bytes: 4-byte big-endian ``handle_type`` followed by
the kernel's ``f_handle`` bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import threading

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_FOLLOW = 0x400
MAX_HANDLE_BYTES = 40  # ext4 8, XFS 12/16, btrfs 20 (40 if connectable; we never ask)
_HEADER = struct.Struct("=Ii")  # struct file_handle: handle_bytes, handle_type
_TYPE = struct.Struct(">i")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


class _Scratch(threading.local):
    """Per-thread argument memory for name_to_handle_at (allocating it costs more than the call)."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(_HEADER.size + MAX_HANDLE_BYTES)
        self.address = ctypes.addressof(self.buffer)
        self.mount_id = ctypes.c_int()
        self.mount_id_ref = ctypes.byref(self.mount_id)


_scratch = _Scratch()


def handle_of(dir_fd: int, name: str = "") -> bytes:
    """The kernel handle of ``name`` in ``dir_fd`` (never following a symlink); "" = dir_fd itself."""
    scratch = _scratch
    buffer = scratch.buffer
    _HEADER.pack_into(buffer, 0, MAX_HANDLE_BYTES, 0)
    if name == "":
        result = _libc.name_to_handle_at(dir_fd, b"", scratch.address, scratch.mount_id_ref, AT_EMPTY_PATH)
    else:
        result = _libc.name_to_handle_at(dir_fd, os.fsencode(name), scratch.address, scratch.mount_id_ref, 0)
    if result != 0:
        _raise_errno("name_to_handle_at")
    size, handle_type = _HEADER.unpack_from(buffer, 0)
    return _TYPE.pack(handle_type) + buffer.raw[_HEADER.size : _HEADER.size + size]


def open_handle(mount_fd: int, handle: bytes, flags: int) -> int:
    """Open the object a kernel handle names, on the file system of ``mount_fd``.

    ``mount_fd`` must be a real (not O_PATH) descriptor: the kernel ignores O_PATH ones here.
    """
    if len(handle) < 4 or len(handle) - 4 > MAX_HANDLE_BYTES:
        raise ValueError("kernel handle of impossible length")
    (handle_type,) = _TYPE.unpack_from(handle, 0)
    payload = handle[4:]
    buffer = ctypes.create_string_buffer(_HEADER.pack(len(payload), handle_type) + payload)
    fd = _libc.open_by_handle_at(mount_fd, buffer, flags)
    if fd < 0:
        _raise_errno("open_by_handle_at")
    return fd


def available(probe_dir: str) -> bool:
    """True when this process may open kernel handles on the file system of ``probe_dir``."""
    try:
        fd = os.open(probe_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        handle = handle_of(fd)
        os.close(open_handle(fd, handle, os.O_PATH))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
