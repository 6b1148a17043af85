"""Web adapters: ``asgi.SMSGuardMiddleware`` (Starlette, FastAPI) and ``flask.SMSGuard``."""

from __future__ import annotations
