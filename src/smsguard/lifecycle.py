"""A guard's life in a served app: what it says when built.

Built (``Guard()``), a guard that counts in process memory (the ``MemoryBackend``) logs a
WARNING where several processes serve the app, since each would count alone and every limit
would be multiplied by their number: gunicorn's or uvicorn's workers (read from the server's
own configuration, on the main thread's stack), ``WEB_CONCURRENCY`` above 1, or a fork of the
process that built it. Where one process is known to serve (``-w 1``, uvicorn without
``--workers``), or nothing says how many, it says nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from contextlib import suppress
from typing import Any

from smsguard.backends.base import Backend

log = logging.getLogger("smsguard")


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


# A forked child says if it holds a copy of a memory backend.


def _after_fork_in_child() -> None:
    copies = [(backend, pid) for backend, (pid, warned) in list(_built.items()) if not warned]
    if copies:
        reason = _several(copies[0][1])
        if reason is not None:
            _warn(reason)
        for backend, _ in copies:
            _built[backend] = (os.getpid(), reason is not None)


os.register_at_fork(after_in_child=_after_fork_in_child)
