"""Shared pytest setup: the repository root on sys.path (tests run without
installing the package) and a quiet, deterministic hypothesis profile."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Fast by default; deadline=None because the first parse builds the lark parser.
settings.register_profile("mupspec", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mupspec")
