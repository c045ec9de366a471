"""Parsing of the management CLI's human input: sizes, access rules, owners, modes.

Owns the CLI's constants (default URL, admin token file name, patterns), the
``UsageError`` a command line can be refused with before any call, and the
parsers argparse and the console forms use: ``parse_size`` (``10G``),
``parse_access`` (``10.0.0.0/24:ro:all``), ``parse_owner`` and ``parse_mode``.
"""

from __future__ import annotations

import argparse
import re


DEFAULT_URL = "http://127.0.0.1:8080"
ADMIN_TOKEN_FILE = "admin.token"
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:I?B?)\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
ACCESS_LEVELS = ("rw", "ro")
SQUASH_KINDS = ("root", "all", "none")


class UsageError(Exception):
    """A command line the CLI can refuse before calling the appliance."""


# --------------------------------------------------------------------------- input parsing


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5GiB``, ``4096`` -> bytes (binary units)."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (use bytes or a number with K, M, G, T or P, e.g. 10G)")
    number, unit = match.groups()
    size = int(float(number) * SIZE_UNITS[unit.upper()]) if "." in number else int(number) * SIZE_UNITS[unit.upper()]
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be more than 0 bytes: {text!r}")
    return size


def parse_access(text: str) -> dict[str, str]:
    """``CLIENT[:rw|ro[:root|all|none]]`` -> an access rule (IPv6 clients keep their colons)."""
    parts = text.split(":")
    access, squash = "rw", "root"
    if len(parts) >= 3 and parts[-1] in SQUASH_KINDS and parts[-2] in ACCESS_LEVELS:
        access, squash = parts[-2], parts[-1]
        parts = parts[:-2]
    elif len(parts) >= 2 and parts[-1] in ACCESS_LEVELS:
        access = parts[-1]
        parts = parts[:-1]
    client = ":".join(parts)
    if not client:
        raise argparse.ArgumentTypeError(
            f"not an access rule: {text!r} (use CLIENT[:rw|ro[:root|all|none]], e.g. 10.0.0.0/24:ro)")
    return {"client": client, "access": access, "squash": squash}


OWNER_ID_LIMIT = (1 << 32) - 2  # the appliance's limit too (2^32-1 means "unchanged" to chown)


def parse_owner(text: str) -> tuple[int, int]:
    """'UID:GID' (decimal numbers, 0 .. 2^32-2) -> (uid, gid)."""
    match = re.fullmatch(r"(\d{1,10}):(\d{1,10})", text.strip())
    if not match or max(int(match[1]), int(match[2])) > OWNER_ID_LIMIT:
        raise argparse.ArgumentTypeError(
            f"not an owner: {text!r} (use UID:GID, numbers 0..{OWNER_ID_LIMIT}, e.g. 64055:64055)")
    return int(match[1]), int(match[2])


def parse_mode(text: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r} (e.g. 0660)")
    return text if len(text) == 4 else "0" + text

