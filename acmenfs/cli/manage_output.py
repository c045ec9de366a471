"""Rendering of the management CLI's answers: human sizes, aligned tables, progress.

Owns ``format_size``, ``format_table`` and ``format_fields``, the renderers of
shares, snapshots, the pool and tokens, and ``ElapsedIndicator`` (the elapsed
time shown on a terminal while a long request runs).  It calls nothing.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any, Iterable, Sequence


# --------------------------------------------------------------------------- output


def format_size(size: int | None) -> str:
    """Bytes -> ``10 GiB``, ``1.5 MiB``, ``512 B``."""
    if size is None:
        return "-"
    for unit, factor in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                         ("KiB", 1 << 10)):
        value = size / factor
        if round(abs(value), 1) >= 1:  # 1023.96 KiB reads better as 1.0 MiB than 1024.0 KiB
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; numbers-as-text stay left-aligned for simplicity."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def format_fields(fields: Sequence[tuple[str, Any]]) -> str:
    """``label:  value`` lines; a list value continues on indented lines."""
    width = max(len(label) for label, _ in fields) + 1
    lines = []
    for label, value in fields:
        values = value if isinstance(value, list) else [value]
        values = values or ["-"]
        lines.append(f"{(label + ':').ljust(width)}  {values[0]}")
        lines += [f"{' ' * width}  {more}" for more in values[1:]]
    return "\n".join(lines)


def _rule_text(rule: dict) -> str:
    return f"{rule['client']} {rule['access']} squash={rule['squash']}"


def _volume_text(volume: dict | None) -> str:
    if not volume:
        return "-"
    kind = "sparse" if volume["sparse"] else "preallocated"
    owner = f", owner {volume['uid']}:{volume['gid']}" if "uid" in volume else ""
    return (f"{volume['name']} ({format_size(volume['size'])}, {kind}, mode {volume['mode']}{owner}, "
            f"{format_size(volume['allocated_bytes'])} allocated)")


def render_share(share: dict) -> str:
    return format_fields([
        ("name", share["name"]),
        ("id", share["id"]),
        ("state", share["state"]),
        ("size", f"{format_size(share['size'])} ({share['size']} bytes)"),
        ("used", format_size(share["used_bytes"])),
        ("volume", _volume_text(share.get("volume"))),
        ("export", share["nfs"]["location"]),
        ("nfs url", share["nfs"]["url"]),
        ("origin snapshot", share.get("origin_snapshot_id") or "-"),
        ("created", share["created_at"]),
        ("access", [_rule_text(rule) for rule in share["access"]]),
    ])


def render_shares(shares: list[dict]) -> str:
    rows = [(s["name"], s["id"], format_size(s["size"]), format_size(s["used_bytes"]), s["state"],
             (s.get("volume") or {}).get("name", "-"), s["nfs"]["location"]) for s in shares]
    return format_table(("NAME", "ID", "SIZE", "USED", "STATE", "VOLUME", "EXPORT"), rows)


def render_snapshot(snapshot: dict) -> str:
    return format_fields([
        ("name", snapshot["name"]),
        ("id", snapshot["id"]),
        ("share id", snapshot["share_id"]),
        ("size", f"{format_size(snapshot['size'])} ({snapshot['size']} bytes)"),
        ("path", snapshot["path"]),
        ("created", snapshot["created_at"]),
    ])


def render_snapshots(snapshots: list[dict]) -> str:
    rows = [(s["name"], s["id"], format_size(s["size"]), s["created_at"], s["path"]) for s in snapshots]
    return format_table(("NAME", "ID", "SIZE", "CREATED", "PATH"), rows)


def render_pool(pool: dict) -> str:
    nfs = pool.get("nfs") or {}
    return format_fields([
        ("backend", pool["backend"]),
        ("total", format_size(pool["total_bytes"])),
        ("used", format_size(pool["used_bytes"])),
        ("free", format_size(pool["free_bytes"])),
        ("provisioned", format_size(pool["provisioned_bytes"])),
        ("shares", pool["share_count"]),
        ("snapshots", pool["snapshot_count"]),
        ("nfs", f"{nfs.get('host')} port {nfs.get('port')}, mount port {nfs.get('mount_port')}"),
    ])


def render_tokens(tokens: list[dict]) -> str:
    return format_table(("NAME", "ID", "CREATED"), [(t["name"], t["id"], t["created_at"]) for t in tokens])


class ElapsedIndicator:
    """A spinner with elapsed seconds on stderr while a long call runs (TTY only)."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ElapsedIndicator":
        if self.stream.isatty():
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _spin(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle(self.FRAMES):
            if self._done.wait(0.1):
                return
            self.stream.write(f"\r{frame} {self.label} {time.monotonic() - started:5.1f}s")
            self.stream.flush()

