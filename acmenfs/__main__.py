"""Allows ``python -m acmenfs``."""

from acmenfs.cli.main import main

raise SystemExit(main())
