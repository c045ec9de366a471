"""How a file sits in the page cache: the size of the folio that holds a random page of it.

Owns ``folio_profile(path)``, used by ``bench_vmio`` before every run.  Why it matters: on
ext4 since Linux 6.16 (large folios) a 4 KiB ``pwrite`` into a page held by a 2 MiB folio
costs the writer 30-33 µs of kernel time (``ext4_block_write_begin`` walks every buffer head
of the folio), against 2-4 µs into an order-0 folio (``bench/page_cache.py --pwrite`` on this
machine, kernel 6.18).  A file written or read in large pieces (an image copied in, our own
``fill_and_cache``) is cached in large folios; one dropped from the cache and touched again
in 4 KiB pieces comes back in small ones.  That one fact moves a 4 KiB write's cost per call
by a third for every NFS server, so each run records it.

How: the file is mapped (``MAP_SHARED``, read-only) and ``mincore`` tells which sampled pages
are resident; only those are touched (a touch of a resident page maps it, it never reads the
disk or changes a folio).  ``/proc/self/pagemap`` gives each touched page's frame number and
``/proc/kpageflags`` the frame's COMPOUND_HEAD / COMPOUND_TAIL flags; the folio's size is the
run of tail frames after its head.  Needs root (frame numbers); without it answers None.

    python bench/page_cache.py FILE [--pwrite]   # profile; --pwrite also times 4 KiB pwrites into it
"""

from __future__ import annotations

import ctypes
import os
import random
import struct
import sys
import time

PAGE = 4096
_HEAD, _TAIL = 1 << 15, 1 << 16          # KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL
_MAX_FOLIO_PAGES = 512                   # a PMD-sized folio: 2 MiB of 4 KiB pages
_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1
_PROT_READ, _MAP_SHARED = 1, 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def _folio_pages(kpageflags: int, pfn: int) -> int:
    """Pages in the folio holding frame ``pfn``: 1 for a small folio, else head + tails."""
    low = max(0, pfn - _MAX_FOLIO_PAGES + 1)
    words = os.pread(kpageflags, 8 * (2 * _MAX_FOLIO_PAGES), low * 8)
    flags = struct.unpack(f"{len(words) // 8}Q", words)
    at = pfn - low
    if not flags[at] & (_HEAD | _TAIL):
        return 1
    head = at
    while head > 0 and not flags[head] & _HEAD:
        head -= 1
    end = head + 1
    while end < len(flags) and flags[end] & _TAIL:
        end += 1
    return end - head


def folio_profile(path, samples: int = 256, seed: int = 0) -> dict | None:
    """{"resident": share of sampled pages in the cache, "folio_kib": mean size in KiB of the folio
    holding a sampled resident page, "large": share of them in folios of 64 KiB or more}; None
    when frame numbers cannot be read (not root, no /proc/kpageflags) or the file is empty."""
    try:
        kpageflags = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    fd = pagemap = -1
    base = size = 0
    try:
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        if size < PAGE:
            return None
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
        base = _libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            return None
        pages = size // PAGE
        resident_map = ctypes.create_string_buffer(pages)
        if _libc.mincore(base, pages * PAGE, resident_map) != 0:
            return None
        in_cache = resident_map.raw   # (a copy: take it once)
        rnd = random.Random(seed)
        resident, sizes = 0, []
        for _ in range(samples):
            page = rnd.randrange(pages)
            if not in_cache[page] & 1:
                continue
            resident += 1
            ctypes.string_at(base + page * PAGE, 1)   # map it: pagemap shows only mapped pages
            entry = struct.unpack("Q", os.pread(pagemap, 8, (base // PAGE + page) * 8))[0]
            pfn = entry & _PFN_MASK
            if not entry & _PRESENT or pfn == 0:      # pfn 0: frame numbers hidden (no CAP_SYS_ADMIN)
                return None
            sizes.append(_folio_pages(kpageflags, pfn))
    except OSError:
        return None
    finally:
        if base:
            _libc.munmap(base, size)
        for handle in (fd, pagemap, kpageflags):
            if handle >= 0:
                os.close(handle)
    return {
        "resident": round(resident / samples, 3),
        "folio_kib": round(sum(sizes) * PAGE / 1024 / len(sizes), 1) if sizes else 0.0,
        "large": round(sum(1 for s in sizes if s >= 16) / len(sizes), 3) if sizes else 0.0,
    }


def time_pwrites(path, count: int = 20000, seed: int = 1) -> float:
    """µs per 4 KiB pwrite at random page-aligned offsets of ``path`` (it writes into the file)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        pages = os.fstat(fd).st_size // PAGE
        block = os.urandom(PAGE)
        rnd = random.Random(seed)
        offsets = [rnd.randrange(pages) * PAGE for _ in range(count)]
        started = time.perf_counter()
        for offset in offsets:
            os.pwrite(fd, block, offset)
        return (time.perf_counter() - started) / count * 1e6
    finally:
        os.close(fd)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(folio_profile(sys.argv[1]))
    if "--pwrite" in sys.argv[2:]:
        print(f"{time_pwrites(sys.argv[1]):.1f} µs per 4 KiB pwrite")
