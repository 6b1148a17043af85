"""``python -m smsguard``: the ``smsguard`` command."""

from __future__ import annotations

from smsguard.cli import main

main()
