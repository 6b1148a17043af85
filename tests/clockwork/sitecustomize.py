"""The test's clock, injected into a Python subprocess (the CLI, manage.py): on PYTHONPATH with
TEST_CLOCK_NOW set (conftest.py ``at``), ``time.time()`` is that instant, as ``Clock()`` is in the
test. The test and the subprocess then agree on the day, whatever the time of day it runs at."""

from __future__ import annotations

import os
import time

_NOW = os.environ.get("TEST_CLOCK_NOW")
if _NOW is not None:
    _now = float(_NOW)
    time.time = lambda: _now
