#!/usr/bin/env python
"""The example Django project's manage.py: ``python manage.py smsguard status +8613800138000``."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsdemo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
