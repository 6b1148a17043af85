"""``manage.py smsguard ...``: the ``smsguard`` command's subcommands (status, reset, list,
suspend, resume, stats, report, check) on the guard of ``settings.SMSGUARD``."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from smsguard.adapters.django import guard
from smsguard.cli import commands


class Command(BaseCommand):
    help = "Look at and steer the guard of settings.SMSGUARD (see: manage.py smsguard --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand the arguments to the click group: its parsing, help, output and exit codes."""
        group = commands(lambda _: guard(), config=False)
        group.main(args=argv[2:], prog_name=f"{os.path.basename(argv[0])} smsguard")

    def handle(self, *args: Any, **options: Any) -> None:  # call_command: no click parsing there
        raise NotImplementedError("run it as manage.py smsguard ...")
