"""The fingerprint (fingerprint.py): what the app's guard leaves in its shared backend for the
smsguard command to compare its settings with. Written once, with the first decision's write,
never a round trip per decision; nothing of a number or the secret in it; differences named."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

import pytest
from conftest import Clock, Unplugged, unique_prefix
from servers import RedisServer, top_level_commands

from smsguard import BackendUnavailable, DailyCap, Guard, Suspend, Whitelist
from smsguard.backends.redis import RedisBackend
from smsguard.fingerprint import KEY, differences
from smsguard.plan import Change, Note

VICTIM = "+8613800138000"
SECRET = "fingerprint-secret"


@pytest.mark.redis_server
def test_a_burst_at_start_writes_it_once_with_the_statistics(redis_server: RedisServer, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    warm = Guard([Suspend(), DailyCap(1000)], backend=backend, clock=clock, secret=SECRET)
    asyncio.run(warm.acheck("+8613900139000"))  # the script loaded, before the count starts
    fresh = Guard([Suspend(), DailyCap(1000)], backend=backend, clock=clock, secret=SECRET)

    async def burst() -> None:
        await asyncio.gather(*(fresh.acheck(f"+86138001380{i:02d}") for i in range(50)))

    commands = top_level_commands(redis_server.port, lambda: asyncio.run(burst()))
    assert commands.count("EVALSHA") == 50
    assert commands.count("SET") == 1, "one write of the fingerprint, however many decisions"
    assert commands.count("EVAL") == 1, "one write of statistics (tally.lua): it went with them"
    assert set(commands) == {"EVALSHA", "EVAL", "SET"}, commands
    assert backend.note(KEY) == fresh.fingerprint


class Busy(Unplugged):
    """A shared backend on which decisions arrive while the first write is on the wire (as in a
    burst at start-up), and that counts the fingerprints it is sent."""

    def __init__(self, arriving: Callable[[], Awaitable[object]] | None = None) -> None:
        super().__init__()
        self.arriving, self.notes = arriving, 0

    async def aapply(self, changes: Sequence[Change]) -> None:
        self.notes += sum(isinstance(c, Note) for c in changes)
        arriving, self.arriving = self.arriving, None
        if arriving is not None:
            await arriving()
        await super().aapply(changes)


@pytest.mark.parametrize("statistics", [True, False])
def test_decisions_during_its_write_do_not_send_it_again(statistics: bool) -> None:
    backend = Busy()
    guard = Guard([DailyCap(100)], backend=backend, secret=SECRET, statistics=statistics)

    async def burst() -> None:
        await asyncio.gather(*(guard.acheck(f"+86138001380{i:02d}") for i in range(20)))

    backend.arriving = burst
    asyncio.run(guard.acheck(VICTIM))
    assert backend.notes == 1
    assert backend.note(KEY) == guard.fingerprint


@pytest.mark.redis_server
def test_without_statistics_it_goes_right_after_the_first_decision(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    guard = Guard([DailyCap(3)], backend=backend, secret=SECRET, statistics=False)
    assert backend.note(KEY) is None
    guard.check(VICTIM)
    assert backend.note(KEY) == guard.fingerprint


def test_a_guard_that_only_reads_and_writes_leaves_none() -> None:
    """The command's own guard decides nothing: its suspend or status must not stand for the app."""
    backend = Unplugged()
    guard = Guard([Suspend(), DailyCap(3)], backend=backend, secret=SECRET)
    guard.suspend()
    guard.status(VICTIM)
    guard.stats()
    assert backend.note(KEY) is None


def test_an_outage_keeps_it_owed(clock: Clock) -> None:
    backend = Unplugged()
    guard = Guard([DailyCap(3)], backend=backend, clock=clock, secret=SECRET, retry_interval=1)
    backend.down = True
    assert guard.check(VICTIM).degraded
    backend.down = False
    clock.advance(1)
    guard.check(VICTIM)
    assert backend.note(KEY) == guard.fingerprint


def test_nothing_of_a_number_or_of_the_secret() -> None:
    guard = Guard(
        [Whitelist(["+8613700137000"]), DailyCap(3, tz="Asia/Shanghai")],
        backend=Unplugged(),
        secret=SECRET,
        default_region="CN",
    )
    text = guard.fingerprint
    for secret in ("13700137000", SECRET):
        assert secret not in text
    found = json.loads(text)
    assert (found["region"], found["zone"]) == ("CN", "Asia/Shanghai")
    assert found["policies"][1] == {
        "type": "DailyCap",
        "name": "daily_cap",
        "limit": 3,
        "shadow": False,
        "tz": "Asia/Shanghai",
    }


def test_differences_are_named() -> None:
    def of(*policies: object, secret: str = SECRET, region: str | None = "CN") -> str:
        return Guard(list(policies), secret=secret, default_region=region).fingerprint  # type: ignore[arg-type]

    app = of(Suspend(), DailyCap(10))
    assert differences(app, of(Suspend(), DailyCap(10))) == []
    assert differences(app, of(Suspend(), DailyCap(10), secret="other")) == ["secret: not the app's"]
    assert differences(app, of(Suspend(), DailyCap(10), region="US")) == [
        "default region: the app's 'CN', here 'US'"
    ]
    assert differences(app, of(Suspend(), DailyCap(5))) == ["daily_cap: limit 10 in the app, 5 here"]
    assert differences(app, of(DailyCap(10))) == ["policies of the app's missing here: suspend (Suspend)"]
    assert differences(app, of(DailyCap(10), Suspend())) == [
        "policies in another order: the app's suspend (Suspend), daily_cap (DailyCap)"
    ]


def test_an_unreachable_backend_is_no_crash() -> None:
    backend = Unplugged()
    guard = Guard([DailyCap(3)], backend=backend, secret=SECRET, fail_mode="closed")
    backend.down = True
    assert guard.check(VICTIM).reason == "backend_unavailable"
    with pytest.raises(BackendUnavailable):
        guard.flush()
