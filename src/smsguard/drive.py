"""The one driver pair: ``drive`` and ``adrive`` run a flow with its I/O.

A flow is a generator with no I/O of its own (sans-I/O, as h11 is): it yields a step (what it
needs done: a script to run, changes to apply, the guard's check of a request) and is sent
the answer back, or has the step's exception thrown in at the very step that failed, and it
returns its result. ``io`` does the step. The Guard's operations, the Redis backend's steps
and the web exchange are all flows, and these two functions are the only loops that run
them: sync and async differ in one ``await``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

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
