from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from smsguard.adapters.django import lifespan

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsdemo.settings")
# Django refuses the ASGI lifespan; smsguard answers it, to write its statistics at shutdown.
application = lifespan(get_asgi_application())
