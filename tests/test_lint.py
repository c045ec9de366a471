"""The code stays pyflakes-clean: no unused imports or variables, no undefined names, no
shadowed fixtures (fixtures reach test modules through conftest.py, never by import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyflakes_reports_nothing():
    done = subprocess.run([sys.executable, "-m", "pyflakes", "acmenfs", "tests", "bench", "scripts"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout == "" and done.returncode == 0, done.stdout + done.stderr
