"""The Django app of smsguard: it brings ``manage.py smsguard``."""

from __future__ import annotations

from django.apps import AppConfig


class SMSGuardConfig(AppConfig):
    name = "smsguard.adapters.django"
    label = "smsguard"
    verbose_name = "smsguard"
