"""A guard's life in a served app: what it says when built, and its statistics kept flowing.

Built (``Guard()``), a guard that counts in process memory (the ``MemoryBackend``) logs a
WARNING where several processes serve the app, since each would count alone and every limit
would be multiplied by their number: gunicorn's or uvicorn's workers (read from the server's
own configuration, on the main thread's stack), ``WEB_CONCURRENCY`` above 1, or a fork of the
process that built it. Where one process is known to serve (``-w 1``, uvicorn without
``--workers``), or nothing says how many, it says nothing.

Served (``serve(guard)``, which every adapter calls when its app starts), a ``Flusher`` thread
writes the statistics a worker holds every ``flush_interval``, an idle worker's too, off the
requests' path; and ``stop``/``astop`` write what is left at shutdown: the ASGI lifespan's,
else at the process's exit (``atexit``: a WSGI worker's stop). A process killed by a signal
runs neither: under uvicorn, which re-raises the SIGTERM it stopped for, an app without the
lifespan protocol loses up to ``flush_interval``'s counts (Django's: see
``smsguard.adapters.django.lifespan``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from contextlib import suppress
from typing import Any, Protocol

from smsguard.backends.base import Backend
from smsguard.errors import BackendUnavailable
from smsguard.stats import Flushed, Flusher

log = logging.getLogger("smsguard")


class Served(Flushed, Protocol):
    """What serving a guard needs of it."""

    backend: Backend

    async def aflush(self) -> None: ...


# -- a memory backend split between processes --------------------------------------------------

_built: weakref.WeakKeyDictionary[Any, tuple[int, bool]] = weakref.WeakKeyDictionary()
"""Each process-local backend a guard was built on: the pid that built it, and whether that
process warned about it."""


def warn_if_split(backend: Backend) -> None:
    """Log a WARNING if ``backend`` is process-local and several processes serve the app."""
    if backend.shared:
        return
    reason = _several(os.getpid())
    if reason is not None:
        _warn(reason)
    with suppress(TypeError):  # a backend that takes no weak reference: a fork goes unnoticed
        _built[backend] = (os.getpid(), reason is not None)


def local_backends() -> list[Backend]:
    """Every process-local backend a guard of this process was built on, while it lives (the
    pytest plugin empties them between tests)."""
    return list(_built)


def several() -> str | None:
    """Why this process is likely one of several serving the app (the server's workers,
    ``WEB_CONCURRENCY``); None where it is known to be the only one, or nothing says."""
    return _several(os.getpid())


def _several(built_in: int) -> str | None:
    """Why this process is likely one of several serving the app; None where it is known to be
    the only one, or nothing says."""
    server = _server()
    if server is not None:
        name, workers = server
        return f"{name} runs {workers} worker processes" if workers > 1 else None
    concurrency = os.environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit() and int(concurrency) > 1:
        return f"WEB_CONCURRENCY={concurrency}"
    if built_in != os.getpid():
        pid = os.getpid()
        return f"this process (pid {pid}) was forked from the one that built the guard (pid {built_in})"
    return None


def _server() -> tuple[str, int] | None:
    """(server, worker processes) of the gunicorn or uvicorn running this process, read from
    their objects on the main thread's stack, where their loop runs: gunicorn's arbiter
    (``num_workers``, which follows TTIN and TTOU) or a worker's ``cfg``, uvicorn's ``Config``."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        server = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if server in ("gunicorn", "uvicorn"):
            local = frame.f_locals
            for value in (local.get("self"), local.get("config")):
                workers = _workers(value)
                if workers is not None:
                    return server, workers
        frame = frame.f_back
    return None


def _workers(value: object) -> int | None:
    for holder, name in (
        (value, "num_workers"),  # gunicorn's Arbiter
        (getattr(value, "cfg", None), "workers"),  # a gunicorn Worker or Application
        (value, "workers"),  # uvicorn's Config
        (getattr(value, "config", None), "workers"),  # uvicorn's Server
    ):
        workers = getattr(holder, name, None)
        if type(workers) is int:
            return workers
    return None


def _warn(reason: str) -> None:
    log.warning(
        "smsguard: this guard counts in process memory, but %s: each process counts alone, so "
        "every limit is multiplied by the number of processes. Give it a shared backend: "
        "SMSGUARD_STORAGE_URI=redis://host:6379/0 (or Guard(backend=RedisBackend.from_url(...)))",
        reason,
    )


# -- statistics written on a timer and at shutdown ----------------------------------------------

_served: weakref.WeakKeyDictionary[Served, Flusher] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_paused: list[Flusher] = []


def serve(guard: Served) -> None:
    """Keep ``guard``'s statistics flowing while its app is served: a timer writes what it
    holds every ``flush_interval``, and the process's exit writes the rest. What the adapters
    call when their app starts; idempotent. (Nothing to do for a process-local backend, whose
    counts die with the process, nor without statistics.)"""
    if guard.statistics is None or not guard.backend.shared:
        return
    with _lock:
        flusher = _served.get(guard)
        if flusher is None:
            flusher = _served[guard] = Flusher(guard)
    flusher.start()


def stop(guard: Served) -> None:
    """Stop ``guard``'s timer and write what it holds (a shutdown hook)."""
    flusher = _served.get(guard)
    if flusher is not None:
        flusher.stop()
    try:
        guard.flush()
    except BackendUnavailable as exc:
        log.warning("smsguard: statistics not written at shutdown: %s", exc)


async def astop(guard: Served) -> None:
    """``stop`` for async code (an ASGI lifespan's shutdown)."""
    flusher = _served.get(guard)
    if flusher is not None:
        flusher.stop()
    try:
        await guard.aflush()
    except BackendUnavailable as exc:
        log.warning("smsguard: statistics not written at shutdown: %s", exc)


@atexit.register
def _exit() -> None:
    for guard in list(_served):
        stop(guard)


# A fork copies no thread: the timers stop before it (so that the child inherits no lock one
# held) and start again on both sides; and a child says if it holds a copy of a memory backend.


def _before_fork() -> None:
    _paused[:] = [flusher for flusher in list(_served.values()) if flusher.running]
    for flusher in _paused:
        flusher.stop()


def _after_fork_in_parent() -> None:
    for flusher in _paused:
        flusher.start()
    _paused.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _after_fork_in_parent()
    copies = [(backend, pid) for backend, (pid, warned) in list(_built.items()) if not warned]
    if copies:
        reason = _several(copies[0][1])
        if reason is not None:
            _warn(reason)
        for backend, _ in copies:
            _built[backend] = (os.getpid(), reason is not None)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
