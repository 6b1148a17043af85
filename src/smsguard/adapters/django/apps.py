"""The Django app of smsguard: it brings ``manage.py smsguard`` and the system checks of
``smsguard.adapters.django.checks`` (``manage.py check``)."""

from __future__ import annotations

from django.apps import AppConfig


class SMSGuardConfig(AppConfig):
    name = "smsguard.adapters.django"
    label = "smsguard"
    verbose_name = "smsguard"

    def ready(self) -> None:
        from django.core import checks

        from smsguard.adapters.django.checks import check_smsguard

        checks.register(check_smsguard, "smsguard")
