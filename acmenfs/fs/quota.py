"""Per-export space accounting: a used-bytes counter kept up to date by deltas.

Owns ``UsageCounter``: scanned once (lazily, on first use) by walking the export,
then adjusted with allocated-size (st_blocks) deltas reported by the backend
after every operation that allocates or frees space.  ``check_growth`` raises
``QuotaExceeded`` when an operation would push usage past the quota.  It never
walks the tree per call and knows nothing of NFS.
"""

from __future__ import annotations

import os
import threading

from acmenfs.fs.backend import QuotaExceeded


def allocated_bytes(st: os.stat_result) -> int:
    return st.st_blocks * 512


def scan_usage(directory: str) -> int:
    """Allocated bytes under ``directory`` (hard links counted once, no symlink followed)."""
    seen: set[tuple[int, int]] = set()
    total = allocated_bytes(os.lstat(directory))
    for parent, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += allocated_bytes(st)
    return total


class UsageCounter:
    """Bytes used in one export, and its optional quota."""

    def __init__(self, directory: str, quota_bytes: int | None) -> None:
        self.directory = directory
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._used: int | None = None

    @property
    def scanned(self) -> bool:
        return self._used is not None

    @property
    def used(self) -> int:
        if self._used is None:
            scanned = scan_usage(self.directory)
            with self._lock:
                if self._used is None:
                    self._used = scanned
        return self._used

    def add(self, delta: int) -> None:
        if delta and self._used is not None:
            with self._lock:
                self._used = max(0, self._used + delta)

    def check_growth(self, growth: int) -> None:
        """Raise QuotaExceeded if ``growth`` more bytes would exceed the quota."""
        if self.quota_bytes is None or growth <= 0 and self.used < self.quota_bytes:
            return
        if self.used + max(growth, 0) > self.quota_bytes or self.used >= self.quota_bytes:
            raise QuotaExceeded(
                f"quota of {self.quota_bytes} bytes exceeded ({self.used} used, {growth} more wanted)"
            )
