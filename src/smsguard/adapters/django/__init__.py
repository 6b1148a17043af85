"""Django: a middleware and a view decorator, for sync and async views, and ``manage.py
smsguard``.

Configured from one dict in ``settings.py``, keys as the ``SMSGUARD_*`` settings without the
prefix::

    INSTALLED_APPS = [..., "smsguard.adapters.django"]        # for manage.py smsguard
    MIDDLEWARE = [..., "smsguard.adapters.django.SMSGuardMiddleware"]
    SMSGUARD = {
        "STORAGE_URI": "redis://localhost:6379/0",
        "SECRET": "...",                    # the same in every worker
        "DEFAULT_REGION": "CN",
        "ROUTES": ["POST /sms/send"],       # what the middleware guards (below SCRIPT_NAME)
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
    }

``ROUTES`` may map each route to its action: ``{"POST /sms/send": "issue", "POST /sms/verify":
"verify"}`` issues the code on the first (the view texts ``request.smsguard.code`` to
``request.smsguard.decision.phone``) and checks it on the second (the view runs for a right
code only, ``request.smsguard`` its ``CodeCheck``); or to a dict of Gate options
(``{"action": "verify", "code": "otp"}``), a ``"guard"`` among them judging that route with
a Guard of its own (a dotted path: ``{"POST /sms/send": {"guard": "myproject.sms.strict"}}``).
``@protect(action="issue")`` likewise, and ``@protect(guard="myproject.sms.strict")``.

``"CACHE": "default"`` counts in the Redis of that ``CACHES`` alias, on its connection pool
(``cache_backend``). With the app in ``INSTALLED_APPS``, ``manage.py check`` runs smsguard's
system checks (``smsguard.adapters.django.checks``).

``"GUARD": "myproject.sms.guard"`` names a ``Guard`` built in code instead (a dotted path to it,
or to a callable that returns one), for policies settings cannot say (``recommended(...)``);
the other keys then set the request side. ``PHONE``, ``CHALLENGE`` and ``RENDER`` name the
Gate's callables by dotted path too (``"PHONE": "myproject.sms.phone_of"``, given the request;
a field name is ``PHONE_FIELD``). A key the adapter does not know is a ConfigError naming the
nearest one (``ROUTE``: did you mean ``ROUTES``?). Or, instead of the middleware, ``@protect()`` on a
view (``@protect(phone="mobile")`` to change a Gate option for it). The view finds the decision
in ``request.smsguard``: its ``phone`` is the number already validated, in E.164. Responses,
body limits, trusted proxies and refunds are the other adapters' (``smsguard.adapters.http``):
this module is Django's I/O around them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from smsguard.adapters.asgi import Lifespan
from smsguard.adapters.http import (
    GUARD,
    TOO_LARGE,
    Admitted,
    Gate,
    Gates,
    Incoming,
    Marker,
    Reply,
    Routes,
    aexchange_io,
    check_options,
    exchange_io,
)
from smsguard.backends.base import Backend
from smsguard.cli import imported_guard
from smsguard.drive import adrive, drive
from smsguard.errors import ConfigError
from smsguard.guard import Guard
from smsguard.lifecycle import serve
from smsguard.review import HEADERS as REVIEW_HEADERS
from smsguard.review import serve as serve_review
from smsguard.settings import Settings

View = TypeVar("View", bound=Callable[..., Any])
Response = HttpResponseBase


class Built(NamedTuple):
    """What ``settings.SMSGUARD`` makes: the guard, its Gates, the middleware's routes, and
    whether it counts at all (``ENABLED``)."""

    guard: Guard
    gates: Gates
    routes: Routes
    enabled: bool
    guards: Mapping[tuple[str, str], Guard]
    """The routes' own guards (a ``"guard"`` in ``ROUTES``), by method and path."""


class _Configured:
    """``settings.SMSGUARD``, built once per process (and again when a test overrides it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: Built | None = None

    def get(self) -> Built:
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    values: Mapping[str, Any] = getattr(settings, "SMSGUARD", {})
                    if not isinstance(values, Mapping):
                        raise ConfigError("settings.SMSGUARD must be a dict of smsguard settings")
                    read = Settings(values, "")  # every key known, Django's own too
                    routes = Routes(values.get("ROUTES", ("POST /sms/send",)))
                    self._built = Built(
                        _guard(read),
                        routes.gates({**Gate.settings(values, prefix=""), **_callables(read)}),
                        routes,
                        read.boolean("ENABLED", True),
                        _route_guards(routes),
                    )
                    for guard_ in (self._built.guard, *self._built.guards.values()):
                        serve(guard_)  # statistics on a timer, and written at exit
                built = self._built
        return built

    def clear(self, **kwargs: Any) -> None:
        if kwargs.get("setting") == "SMSGUARD":
            self._built = None


def _guard(read: Settings) -> Guard:
    if "GUARD" not in read:
        if "CACHE" not in read:  # no country list: the system check says it (smsguard.W005)
            return Guard.from_settings(read.values, prefix="", warn=False)
        if "STORAGE_URI" in read:
            raise ConfigError("SMSGUARD has CACHE and STORAGE_URI: keep one (a CACHES alias, or a URL)")
        backend = cache_backend(
            read.string("CACHE", "default"), prefix=read.string("KEY_PREFIX", "smsguard:")
        )
        return Guard.from_settings(read.values, prefix="", backend=backend, warn=False)
    if "CACHE" in read:
        raise ConfigError("SMSGUARD has GUARD and CACHE: a guard built in code brings its own backend")
    return imported_guard(read.values["GUARD"], read.key("GUARD"))


def _route_guards(routes: Routes) -> dict[tuple[str, str], Guard]:
    """The guard of each route of ``ROUTES`` that names its own (a Guard or a dotted path)."""
    found = {}
    for path, methods in routes.items():
        for method, options in methods.items():
            if GUARD in options:
                found[(method, path)] = own_guard(options[GUARD], f"SMSGUARD['ROUTES'][{method} {path!r}]")
    return found


def own_guard(value: Any, where: str) -> Guard:
    """A route's or a view's own guard: a Guard, or a dotted path to one (or to a callable that
    returns one)."""
    if isinstance(value, Guard):
        return value
    if isinstance(value, str):
        return imported_guard(value, where)
    raise ConfigError(f"{where}: guard must be a Guard or a dotted path to one, not {value!r}")


def cache_backend(alias: str, *, prefix: str = "smsguard:") -> Backend:
    """A RedisBackend on the Redis of ``CACHES[alias]``: Django's own ``RedisCache`` or
    django-redis's ``RedisCache``, whose connection pool it shares (and so its timeouts: give
    the cache short ones, ``"OPTIONS": {"socket_timeout": 0.5}``, for the fail mode to act
    quickly). ``Guard.acheck`` gets an asyncio client with the same connection settings."""
    import redis
    from django.core.cache import InvalidCacheBackendError, caches

    from smsguard.backends.redis import RedisBackend

    try:
        cache = caches[alias]
    except InvalidCacheBackendError as exc:
        raise ConfigError(f"SMSGUARD['CACHE'] = {alias!r}: {exc}") from None
    if hasattr(cache, "client") and hasattr(cache.client, "get_client"):  # django-redis
        client = cache.client.get_client(write=True)
    elif hasattr(cache, "_cache") and hasattr(cache._cache, "get_client"):  # django.core.cache...RedisCache
        client = cache._cache.get_client(write=True)
    else:
        raise ConfigError(
            f"SMSGUARD['CACHE'] = {alias!r} is a {type(cache).__module__}.{type(cache).__name__}, not a "
            "Redis cache: use django.core.cache.backends.redis.RedisCache or django-redis, or STORAGE_URI"
        )
    if not isinstance(client, redis.Redis):
        raise ConfigError(f"SMSGUARD['CACHE'] = {alias!r} gives a {type(client).__name__}, not a redis.Redis")
    return RedisBackend(client, prefix=prefix, make_aclient=functools.partial(_async_twin, client))


def _async_twin(client: Any) -> Any:
    """An asyncio client to the server ``client`` (a ``redis.Redis``) talks to, with its
    connection settings."""
    import redis
    import redis.asyncio

    pool = client.connection_pool
    options = {k: v for k, v in pool.connection_kwargs.items() if k not in ("parser_class", "retry")}
    kind = pool.connection_class
    if issubclass(kind, redis.UnixDomainSocketConnection):
        twin: type[Any] = redis.asyncio.UnixDomainSocketConnection
    elif issubclass(kind, redis.SSLConnection):
        twin = redis.asyncio.SSLConnection
    else:
        twin = redis.asyncio.Connection
    return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(connection_class=twin, **options))


def _callables(read: Settings) -> dict[str, Any]:
    """The Gate's callables that dotted paths name: ``PHONE``, ``CHALLENGE``, ``RENDER``,
    ``EXEMPT``."""
    if "PHONE" in read and "PHONE_FIELD" in read:
        raise ConfigError("SMSGUARD has PHONE and PHONE_FIELD: keep one (a callable's path, or a field name)")
    found = {}
    for name, hint in (
        ("PHONE", ": for a field name use PHONE_FIELD"),
        ("CHALLENGE", ""),
        ("RENDER", ""),
        ("EXEMPT", ""),
    ):
        if name in read:
            found[name.lower()] = read.imported(name, hint)
    return found


configured = _Configured()
setting_changed.connect(configured.clear)


def guard() -> Guard:
    """The guard built from ``settings.SMSGUARD`` (for ``guard().verified(phone)`` and the like)."""
    return configured.get().guard


def lifespan(application: Any) -> Lifespan:
    """Django's ASGI application with the lifespan protocol answered (Django refuses it), so
    that the guard's statistics are written at shutdown: in ``asgi.py``,
    ``application = lifespan(get_asgi_application())``. (uvicorn ends a process that has no
    lifespan by the SIGTERM it stopped for, which runs no exit hook.)"""
    return Lifespan(application, guard=guard)


def review_view(request: HttpRequest) -> HttpResponse:
    """A view that serves the daily review page (``smsguard.review``) of the guard of
    ``settings.SMSGUARD``: ``?day=YYYY-MM-DD`` for a day other than today. It has no access
    control of its own: mount it behind the app's, as in ``path("ops/sms-review/",
    staff_member_required(review_view))``."""
    served = serve_review(guard(), request.GET)
    response = HttpResponse(served.body, status=served.status, content_type=served.content_type)
    for name, value in REVIEW_HEADERS:
        response[name] = value
    return response


class SMSGuardMiddleware:
    """Guards the ``ROUTES`` of ``settings.SMSGUARD`` (default ``POST /sms/send``); sync or
    async, as the rest of the middleware chain is. Another method on a guarded path gets a 405:
    a Django view takes every method unless told otherwise, and might send for any."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        configured.get()  # a bad SMSGUARD fails when the app loads, not on a request
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        built = configured.get()
        path = request.path_info
        methods = built.routes.methods(path)
        if methods is None:
            return self.get_response(request)
        if request.method not in methods:
            reply = _response(built.gates.default.not_allowed(built.routes.allow(path)))
            if self.is_async:
                return _ready(reply)
            return reply
        gate = built.gates.of((request.method, path), methods[request.method])
        guard_ = built.guards.get((request.method, path), built.guard)
        if self.is_async:
            return _aguarded(built, guard_, gate, request, self.get_response)
        return _guarded(built, guard_, gate, request, self.get_response)


def protect(*, guard: Guard | str | None = None, **overrides: Any) -> Callable[[View], View]:
    """Guard one view, sync or async, with the guard of ``settings.SMSGUARD``; ``overrides``
    change Gate options (``phone``, ``content``...) for it, and are checked here. ``guard``:
    the view's own Guard (another set of policies), or a dotted path to one, found on the first
    request (and again once ``settings.SMSGUARD`` changes)."""
    check_options(overrides)
    Gate(**overrides)
    own: list[tuple[Built, Guard]] = []  # the one of the settings in force

    def guard_of(built: Built) -> Guard:
        if guard is None:
            return built.guard
        if not own or own[0][0] is not built:
            found = own_guard(guard, "protect(guard=...)")
            own[:] = [(built, found)]
            serve(found)
        return own[0][1]

    def decorate(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def aguarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                built = configured.get()
                endpoint = functools.partial(view, *args, **kwargs)
                gate = built.gates.of(view, overrides)
                return await _aguarded(built, guard_of(built), gate, request, endpoint)

            return cast(View, aguarded)

        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            built = configured.get()
            endpoint = functools.partial(view, *args, **kwargs)
            return _guarded(built, guard_of(built), built.gates.of(view, overrides), request, endpoint)

        return cast(View, guarded)

    return decorate


def _incoming(request: HttpRequest, gate: Gate) -> tuple[Incoming, bytes | Marker]:
    meta = request.META
    incoming = Incoming(
        request.method or "GET",
        request.path_info,
        request.headers,  # looked up by name, in any case
        meta.get("QUERY_STRING", ""),
        b"",
        meta.get("REMOTE_ADDR") or None,
    )
    declared = gate.declared(meta.get("CONTENT_LENGTH") or None)
    if declared is TOO_LARGE:
        return incoming, TOO_LARGE
    try:
        body = request.body  # read once here; the view reads the same bytes
    except RequestDataTooBig:
        return incoming, TOO_LARGE
    return incoming, TOO_LARGE if len(body) > gate.max_body else body


def _guarded(
    built: Built, guard_: Guard, gate: Gate, request: HttpRequest, endpoint: Callable[..., Any]
) -> Any:
    incoming, body = _incoming(request, gate)
    response = None

    def run(admitted: Admitted) -> int:
        nonlocal response
        request.smsguard = admitted
        response = endpoint(request)
        _rate_headers(response, gate, admitted)
        return int(response.status_code)

    reply = drive(gate.exchange(incoming, body), exchange_io(guard_, run, built.enabled))
    return response if reply is None else _response(reply)


async def _aguarded(
    built: Built, guard_: Guard, gate: Gate, request: HttpRequest, endpoint: Callable[..., Awaitable[Any]]
) -> Any:
    incoming, body = _incoming(request, gate)
    response = None

    async def run(admitted: Admitted) -> int:
        nonlocal response
        request.smsguard = admitted
        response = await endpoint(request)
        _rate_headers(response, gate, admitted)
        return int(response.status_code)

    reply = await adrive(gate.exchange(incoming, body), aexchange_io(guard_, run, built.enabled))
    return response if reply is None else _response(reply)


def _rate_headers(response: Any, gate: Gate, admitted: Admitted) -> None:
    for name, value in gate.rate_headers_of(admitted):
        response[name] = value


async def _ready(response: HttpResponse) -> HttpResponse:
    return response


def _response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response
