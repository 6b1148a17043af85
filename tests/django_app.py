"""A Django app for the tests, configured once per process: views under the middleware, under
``@protect`` (sync and async), one that fails, one that answers 502."""

from __future__ import annotations

import django
from django.conf import settings

SMSGUARD = {
    "DEFAULT_REGION": "CN",
    "SECRET": "django-test",
    "SAME_CONTENT_WINDOW": 0,
    "PHONE_RATE": "",
    "IP_RATE": "",
    "DAILY_CAP": 3,
    # Sends judged ("check"), and a check route under the middleware ("verify").
    "ROUTES": {
        "POST /sms/send": "check",
        "POST /sms/fail": "check",
        "POST /sms/502": "check",
        "POST /codes/verify": "verify",
    },
    "MAX_BODY": 1024,
    "TRUSTED_PROXIES": ["203.0.113.0/24"],
}

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="django_urls",
        INSTALLED_APPS=["smsguard.adapters.django"],
        MIDDLEWARE=["smsguard.adapters.django.SMSGuardMiddleware"],
        DATABASES={},
        USE_TZ=True,
        SMSGUARD=SMSGUARD,
    )
    django.setup()
