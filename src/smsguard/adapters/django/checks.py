"""smsguard's Django system checks (``manage.py check``, and every ``runserver``): the findings
of ``smsguard.checks`` on the guard of ``settings.SMSGUARD``, as Django warnings
``smsguard.W001``... (silence one with ``SILENCED_SYSTEM_CHECKS``), and a ``SMSGUARD`` that
cannot be built as the error ``smsguard.E001``. Registered by the app
(``INSTALLED_APPS = [..., "smsguard.adapters.django"]``).

Whether the app is behind a proxy (W004) is read from the settings that say so:
``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST`` or ``USE_X_FORWARDED_PORT``; a request
that carries the proxy header while no proxy is trusted is logged at run time as well.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from smsguard.checks import findings
from smsguard.errors import SmsguardError

PROXY_SETTINGS = ("SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")
"""Django settings that say the app sits behind a proxy."""


def check_smsguard(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The findings on the guard of ``settings.SMSGUARD``, as Django check messages."""
    from smsguard.adapters.django import configured

    try:
        built = configured.get()
    except SmsguardError as exc:
        return [
            checks.Error(
                f"settings.SMSGUARD cannot be built: {exc}",
                hint="Fix the key it names; the middleware would refuse to load.",
                obj="settings.SMSGUARD",
                id="smsguard.E001",
            )
        ]
    gate = built.gates.default
    proxied = next((name for name in PROXY_SETTINGS if getattr(settings, name, None)), None)
    found = findings(
        built.guard,
        production=not settings.DEBUG,
        trusted_proxies=gate.proxies.any,
        proxied=proxied,
    )
    return [
        checks.Warning(f.message, hint=f.hint, obj="settings.SMSGUARD", id=f"smsguard.{f.id}") for f in found
    ]
