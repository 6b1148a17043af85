"""The one driver pair (drive.py): each step to the I/O, its answer back in, its failure thrown
in at that step, the flow's result returned; sync and async alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest

from smsguard.drive import adrive, drive


def flow(log: list[Any]) -> Generator[str, Any, str]:
    """Asks for "a" and "b"; a failure of "b" is met with "c"."""
    log.append((yield "a"))
    try:
        log.append((yield "b"))
    except KeyError as exc:
        log.append(("thrown at b", exc.args[0]))
        log.append((yield "c"))
    return "done"


def both(io: Callable[[str], Any]) -> list[tuple[str, list[Any]]]:
    """The flow run by drive with ``io``, and by adrive with the same ``io`` awaited."""
    sync_log: list[Any] = []
    async_log: list[Any] = []
    result = drive(flow(sync_log), io)

    async def aio(step: str) -> Any:
        await asyncio.sleep(0)
        return io(step)

    aresult = asyncio.run(adrive(flow(async_log), aio))
    return [(result, sync_log), (aresult, async_log)]


def test_each_answer_goes_back_in_and_the_result_comes_out() -> None:
    assert both(str.upper) == [("done", ["A", "B"])] * 2


def test_a_failure_is_thrown_in_at_the_step_that_met_it() -> None:
    def io(step: str) -> str:
        if step == "b":
            raise KeyError("no b")
        return step.upper()

    assert both(io) == [("done", ["A", ("thrown at b", "no b"), "C"])] * 2


def test_a_failure_the_flow_does_not_meet_reaches_the_caller() -> None:
    def io(step: str) -> str:
        raise ValueError(step)

    with pytest.raises(ValueError, match="a"):
        drive(flow([]), io)


def test_a_cancellation_is_not_thrown_into_the_flow() -> None:
    """What is not an Exception (a task cancelled mid-step) leaves the flow where it was: no
    step of it runs on behalf of a caller that went away."""
    steps: list[str] = []

    def greedy() -> Generator[str, Any, None]:
        try:
            yield "send"
        except asyncio.CancelledError:  # were it thrown in, this flow would give back
            yield "refund"

    def cancelling(step: str) -> Awaitable[str]:
        steps.append(step)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(adrive(greedy(), cancelling))
    assert steps == ["send"]
