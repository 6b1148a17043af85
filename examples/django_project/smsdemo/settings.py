"""A minimal Django project whose guard issues and checks the verification codes.

    ./dev serve django                                        # uvicorn, memory backend (from the checkout)

or, from examples/django_project:

    uvicorn smsdemo.asgi:application --no-proxy-headers      # memory backend, ASGI
    gunicorn smsdemo.wsgi                                     # or WSGI
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \
        uvicorn smsdemo.asgi:application --no-proxy-headers --workers 4

Settings come from SMSGUARD_* environment variables (the prefix dropped), over the defaults below.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "smsdemo.urls"
INSTALLED_APPS = ["smsguard.adapters.django"]  # brings manage.py smsguard
MIDDLEWARE = ["smsguard.adapters.django.SMSGuardMiddleware"]  # no CSRF: an API for scripts
DATABASES: dict[str, object] = {}
USE_TZ = True

SMSGUARD = {
    "STORAGE_URI": os.environ.get("REDIS_URL", "memory://"),
    "DEFAULT_REGION": "CN",
    "TIMEZONE": "Asia/Shanghai",
    # Issue the code on /sms/send (the view only sends it), check it on /sms/verify.
    "ROUTES": {"POST /sms/send": "issue", "POST /sms/verify": "verify"},
    # "GUARD": "smsdemo.sms.guard",  # or a Guard built in code (recommended(...)), by dotted path
    # and each SMSGUARD_* environment variable, the prefix dropped (SMSGUARD_SECRET: "SECRET")
    **{k.removeprefix("SMSGUARD_"): v for k, v in os.environ.items() if k.startswith("SMSGUARD_")},
}
