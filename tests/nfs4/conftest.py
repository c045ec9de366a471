"""Fixtures for the NFSv4 tests: makes the sans-IO server fixtures of nfs4_core_helpers.py
(``v4_exports``, the export table; ``v4``, a ``Sans4`` server on it) visible by name to every
test module in tests/nfs4, so the modules use them without importing them.

Owns nothing else. The definitions stay in nfs4_core_helpers.py, next to ``Sans4``, so that
a module importing them from there by name keeps working (pytest then finds the same fixture
both here and in that module).
"""

from __future__ import annotations

from nfs4_core_helpers import v4, v4_exports  # tests/nfs4/nfs4_core_helpers.py

__all__ = ["v4", "v4_exports"]   # re-exported on purpose: pytest collects them from here
