"""Constants the console's browser tests share: where chromium is, viewports, the screenshot folder."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = os.environ.get("ACMENFS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
