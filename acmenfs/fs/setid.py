"""Dropping S_ISUID/S_ISGID when an NFS caller changes a file's data or size.

The server writes and truncates through descriptors it opened as root, and the kernel
decides by the capabilities of the thread that writes: it sees CAP_FSETID and keeps the
bits.  This module applies, for the NFS caller instead, the rule the kernel applies to a
local writer (``setattr_should_drop_suidgid`` in Linux 6.x, ``should_remove_suid`` before):

- only regular files lose the bits;
- uid 0 that was not squashed keeps them (it has CAP_FSETID);
- S_ISUID is always dropped;
- S_ISGID is dropped when group-exec is set (a real setgid program), and, without
  group-exec, when the caller is not in the file's group (only the group may keep that
  mark, as Linux 6.2+ does).

Capabilities in ``security.capability`` need nothing here: the kernel removes them on any
write or truncate, whoever writes.  The hot path costs one AND: callers test
``st.st_mode & SETID_BITS`` on attributes they already hold and call ``drop_setid``
only when it is non-zero.  It changes nothing but the mode of the descriptor it is given.
"""

from __future__ import annotations

import os
import stat

from acmenfs.fs.credentials import Identity

SETID_BITS = stat.S_ISUID | stat.S_ISGID


def setid_bits_to_drop(st: os.stat_result, who: Identity) -> int:
    """The S_ISUID/S_ISGID bits of ``st`` that a data or size change by ``who`` clears."""
    mode = st.st_mode
    if who.is_root or not stat.S_ISREG(mode):
        return 0
    drop = mode & stat.S_ISUID
    if mode & stat.S_ISGID and (mode & stat.S_IXGRP or not who.in_group(st.st_gid)):
        drop |= stat.S_ISGID
    return drop


def drop_setid(fd: int, st: os.stat_result, who: Identity) -> None:
    """Before ``who`` writes or truncates the file open as ``fd`` (as the server, with
    attributes ``st``): clear the set-id bits the kernel would clear for that caller."""
    drop = setid_bits_to_drop(st, who)
    if drop:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~drop)
