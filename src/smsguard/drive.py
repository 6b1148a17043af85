"""The one driver pair: ``drive`` and ``adrive`` run a flow with its I/O.

A flow is a generator with no I/O of its own (sans-I/O, as h11 is): it yields a step (what it
needs done: a script to run, changes to apply, the guard's check of a request) and is sent
the answer back, or has the step's exception thrown in at the very step that failed, and it
returns its result. ``io`` does the step. The Guard's operations, the Redis backend's steps
and the web exchange are all flows, and these two functions are the only loops that run
them: sync and async differ in one ``await``. ``io(backend)`` and ``aio(backend)`` do the
steps a flow of the guard asks of its backend (``smsguard.backends.base``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from smsguard.backends.base import ASYNC, RUN, Backend

T = TypeVar("T")
Flow = Generator[Any, Any, T]
"""A flow: yields steps, is sent their answers, returns a ``T``."""


def drive(flow: Flow[T], io: Callable[[Any], Any]) -> T:
    """Run ``flow`` to its end: each step it yields goes to ``io``, whose answer is sent back
    in, or whose exception (an ``Exception``: not a cancellation) is thrown in there."""
    try:
        step = next(flow)
        while True:
            try:
                answer = io(step)
            except Exception as exc:
                step = flow.throw(exc)
            else:
                step = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def adrive(flow: Flow[T], aio: Callable[[Any], Awaitable[Any]]) -> T:
    """``drive`` for async code: ``aio`` does each step, awaited."""
    try:
        step = next(flow)
        while True:
            try:
                answer = await aio(step)
            except Exception as exc:
                step = flow.throw(exc)
            else:
                step = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def io(backend: Backend) -> Callable[[tuple[Any, ...]], Any]:
    """What does a flow's steps on ``backend``: ``drive(flow, io(backend))``."""
    run = backend.run

    def step(step: tuple[Any, ...]) -> Any:
        if step[0] == RUN:  # a decision's one step, first
            return run(step[1])
        return getattr(backend, step[0])(*step[1:])

    return step


def aio(backend: Backend) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
    """``io`` for async code: ``adrive(flow, aio(backend))``."""
    arun = backend.arun

    def step(step: tuple[Any, ...]) -> Awaitable[Any]:
        if step[0] == RUN:
            return arun(step[1])
        return getattr(backend, ASYNC[step[0]])(*step[1:])  # type: ignore[no-any-return]

    return step
