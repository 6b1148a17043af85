"""Verification codes: issued with the send's decision, checked with bounded guesses, on every
backend (``make_guard`` runs each test on memory, fakeredis, a real Redis and a real Cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ANSWER_TIMEOUT, Clock, unique_prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import RedisServer, top_level_commands

from smsguard import (
    BackendUnavailable,
    CodeCheck,
    CodeRules,
    DailyCap,
    Decision,
    Guard,
    IPThrottle,
    Issued,
    SameContent,
    UnverifiedCap,
    Whitelist,
)
from smsguard.backends.redis import RedisBackend
from smsguard.events import CODE_CHECK, LOCKOUT, Event
from smsguard.plan import UNRECORDED, CodeState, Guess, Issue, Outcome

PHONE = "+8613800138000"
OTHER = "+8613900139000"


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


def test_issue_then_check_once(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    issued = guard.issue_code(PHONE, ip="203.0.113.7")
    assert isinstance(issued, Issued)
    assert issued.decision.allowed
    assert issued.code is not None
    assert len(issued.code) == 6
    assert issued.code.isdigit()
    first = guard.check_code(PHONE, issued.code, ip="203.0.113.7")
    assert first == CodeCheck(True, None, None, 5)
    # Spent by its first right check.
    again = guard.check_code(PHONE, issued.code, ip="203.0.113.7")
    assert (again.ok, again.reason) == (False, "no_code")


def test_a_resend_while_live_is_the_same_code_and_still_judged(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    guard = make_guard([SameContent(window=30), DailyCap(3)])
    first = guard.issue_code(PHONE)
    assert first.code is not None
    held = guard.issue_code(PHONE)  # within 30 s: the same content, held as any resend
    assert (held.decision.allowed, held.decision.reason, held.code) == (False, "same_content", None)
    clock.advance(31)
    resent = guard.issue_code(PHONE)
    assert resent.decision.allowed
    assert resent.code == first.code
    clock.advance(31)
    assert guard.issue_code(PHONE).code == first.code
    clock.advance(31)
    capped = guard.issue_code(PHONE)  # the fourth send of the day
    assert (capped.decision.reason, capped.code) == ("daily_cap", None)


def test_a_denied_send_issues_no_code(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(1)])
    assert guard.issue_code(PHONE).code is not None
    assert guard.issue_code(OTHER).code is not None
    denied = guard.issue_code(OTHER)
    assert not denied.decision.allowed
    assert denied.code is None


def test_codes_differ_between_numbers_and_after_spending(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    guard = make_guard([])
    codes = set()
    for i in range(20):
        code = guard.issue_code(f"+86138001380{i:02d}").code
        assert code is not None
        codes.add(code)
    assert len(codes) > 15  # 20 draws from a million
    first = guard.issue_code(PHONE).code
    assert first is not None
    assert guard.check_code(PHONE, first).ok
    second = guard.issue_code(PHONE).code
    assert second is not None
    assert second != first


def test_five_wrong_checks_kill_the_code(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([])
    code = guard.issue_code(PHONE).code
    assert code is not None
    lefts = [guard.check_code(PHONE, wrong(code)).attempts_left for _ in range(5)]
    assert lefts == [4, 3, 2, 1, 0]
    dead = guard.check_code(PHONE, code)
    assert (dead.ok, dead.reason, dead.attempts_left) == (False, "check_attempts", 0)
    # A new code lives again.
    fresh = guard.issue_code(PHONE).code
    assert fresh is not None
    assert guard.check_code(PHONE, fresh).ok


@pytest.mark.parametrize(
    "garbage", ["", "abcdef", "12345", "1234567", "１２３４５６", " ", None, 123456, "12 456"]
)
def test_a_malformed_code_is_a_wrong_guess(make_guard: Callable[..., Guard], garbage: Any) -> None:
    guard = make_guard([])
    code = guard.issue_code(PHONE).code
    assert code is not None
    result = guard.check_code(PHONE, garbage)
    assert (result.ok, result.reason, result.attempts_left) == (False, "wrong_code", 4)
    assert guard.check_code(PHONE, f" {code} ").ok  # spaces around a typed code are no matter


def test_expiry_by_the_injected_clock(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([], code_rules=CodeRules(ttl=60))
    code = guard.issue_code(PHONE).code
    assert code is not None
    clock.advance(60)
    result = guard.check_code(PHONE, code)
    assert (result.ok, result.reason) == (False, "code_expired")
    fresh = guard.issue_code(PHONE).code  # an expired code is not sent again
    assert fresh is not None
    clock.advance(59)
    assert guard.check_code(PHONE, fresh).ok


def test_no_code_at_all(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([])
    result = guard.check_code(PHONE, "123456")
    assert (result.ok, result.reason, result.attempts_left) == (False, "no_code", None)


def test_wrong_checks_per_number_per_day(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([], code_rules=CodeRules(per_number="4/day", per_ip=None, max_attempts=3))
    code = guard.issue_code(PHONE).code
    assert code is not None
    for _ in range(3):
        guard.check_code(PHONE, wrong(code))
    code = guard.issue_code(PHONE).code  # dead: a new one
    assert code is not None
    assert guard.check_code(PHONE, wrong(code)).reason == "wrong_code"
    held = guard.check_code(PHONE, code)  # the right code, but the number is at its limit
    assert (held.ok, held.reason) == (False, "too_many_checks")
    assert held.retry_after is not None
    assert 0 < held.retry_after <= 86400
    clock.advance(held.retry_after)
    assert guard.check_code(PHONE, code).ok is False  # expired meanwhile: told so, not "ok"


def test_wrong_checks_per_client_across_numbers(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([], code_rules=CodeRules(per_ip="3/hour"))
    numbers = [f"+86138001381{i:02d}" for i in range(5)]
    codes = {n: guard.issue_code(n).code for n in numbers}
    results = [guard.check_code(n, "000000", ip="198.51.100.9") for n in numbers]
    assert [r.reason for r in results[:3]] == [
        "wrong_code" if codes[n] != "000000" else None for n in numbers[:3]
    ]
    assert [r.reason for r in results[3:]] == ["too_many_checks"] * 2
    # Another client still checks (its own limit), and so does the number's owner.
    code = codes[numbers[4]]
    assert code is not None
    assert guard.check_code(numbers[4], code, ip="192.0.2.1").ok


def test_brute_force_from_a_thousand_addresses_evaluates_five_guesses(
    make_guard: Callable[..., Guard],
) -> None:
    guard = make_guard([])
    code = guard.issue_code(PHONE).code
    assert code is not None
    guesses = [f"{n:06d}" for n in range(1000) if f"{n:06d}" != code][:1000]
    results = [
        guard.check_code(PHONE, guess, ip=f"10.{i // 250}.{i % 250}.1") for i, guess in enumerate(guesses)
    ]
    evaluated = [r for r in results if r.reason == "wrong_code"]
    assert len(evaluated) == 5
    assert all(r.reason in ("check_attempts", "too_many_checks") for r in results[5:])
    assert not guard.check_code(PHONE, code).ok


def test_a_right_check_verifies_the_number_once(make_guard: Callable[..., Guard], clock: Clock) -> None:
    cap = UnverifiedCap("country", "2/day", per_verified=1)
    guard = make_guard([cap])
    numbers = [f"+86138001382{i:02d}" for i in range(6)]
    issued = [guard.issue_code(n) for n in numbers[:2]]
    assert all(i.code for i in issued)
    assert not guard.issue_code(numbers[2]).decision.allowed  # the country's floor of 2
    code = issued[0].code
    assert code is not None
    assert guard.check_code(numbers[0], code).ok
    assert guard.stats().verified == 1
    # One verification, one more send to an unverified number of the country.
    assert guard.issue_code(numbers[2]).decision.allowed
    assert not guard.issue_code(numbers[3]).decision.allowed
    # The same number verified again and again (its code sent and entered, verified() called)
    # earns its scope nothing more: each number counts once per window.
    clock.advance(31)
    again = guard.issue_code(numbers[0]).code  # a verified number is not held by the cap
    assert again is not None
    assert guard.check_code(numbers[0], again).ok
    guard.verified(numbers[0])
    guard.verified(numbers[0])
    assert not guard.issue_code(numbers[3]).decision.allowed


def test_statistics_and_events(make_guard: Callable[..., Guard]) -> None:
    events: list[Event] = []
    guard = make_guard([], listeners=[events.append])
    code = guard.issue_code(PHONE).code
    assert code is not None
    for _ in range(5):
        guard.check_code(PHONE, wrong(code))
    guard.check_code(PHONE, code)
    guard.check_code(OTHER, "123456")
    hours = guard.stats().as_dict()["hours"]
    totals: dict[str, int] = {}
    for fields in hours.values():
        for name, n in fields.items():
            totals[name] = totals.get(name, 0) + n
    assert totals["checked"] == 7
    assert totals["check:wrong_code"] == 5
    assert totals["check:check_attempts"] == 1
    assert totals["check:no_code"] == 1
    assert totals["lockouts"] == 1
    kinds = [e.kind for e in events if e.kind in (CODE_CHECK, LOCKOUT)]
    assert kinds.count(CODE_CHECK) == 7
    assert kinds.count(LOCKOUT) == 1
    for event in events:
        assert "13800138000" not in repr(event)
        assert code not in repr(event)


def test_async_twins(make_guard: Callable[..., Guard]) -> None:
    import asyncio

    guard = make_guard([])

    async def main() -> tuple[Issued, CodeCheck, CodeCheck]:
        issued = await guard.aissue_code(PHONE, ip="203.0.113.7")
        assert issued.code is not None
        bad = await guard.acheck_code(PHONE, wrong(issued.code), ip="203.0.113.7")
        good = await guard.acheck_code(PHONE, issued.code, ip="203.0.113.7")
        return issued, bad, good

    _, bad, good = asyncio.run(main())
    assert bad.reason == "wrong_code"
    assert good.ok


@pytest.mark.parametrize(
    "rules", [{"length": 3}, {"length": 11}, {"ttl": 0}, {"max_attempts": 0}, {"per_ip": "x"}]
)
def test_bad_rules_fail_at_construction(rules: dict[str, Any]) -> None:
    from smsguard import ConfigError

    with pytest.raises(ConfigError):
        CodeRules(**rules)


def test_length_is_a_setting(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([], code_rules=CodeRules(length=4))
    code = guard.issue_code(PHONE).code
    assert code is not None
    assert len(code) == 4
    assert guard.check_code(PHONE, code).ok


# -- through the real Redis and the real Cluster ------------------------------------------------

CHECKER = textwrap.dedent(
    """
    import json, sys, threading
    from smsguard import Guard
    from smsguard.backends.redis import RedisBackend
    url, prefix, phone, now = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    plans, timeout = json.loads(sys.argv[5]), float(sys.argv[6])  # one list of guesses a thread
    backend = RedisBackend.from_url(url, prefix=prefix, timeout=timeout)
    guard = Guard([], backend=backend, secret="shared", clock=lambda: now)
    results = []
    start = threading.Barrier(len(plans))
    def hammer(guesses):
        start.wait()
        for guess in guesses:
            results.append(guard.check_code(phone, guess).reason or "ok")
    threads = [threading.Thread(target=hammer, args=(plan,)) for plan in plans]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(" ".join(results))
    """
)

CHECK_REASONS = {"ok", "wrong_code", "no_code", "check_attempts", "too_many_checks"}


def checked_at_once(url: str, prefix: str, now: float, plans: list[list[str]]) -> list[str]:
    """Four processes, each running one thread per plan at once against the same number: every
    reason they were given."""
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHECKER,
                url,
                prefix,
                PHONE,
                repr(now),
                json.dumps(plans),
                str(ANSWER_TIMEOUT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reasons = [r for w in workers for r in w.communicate(timeout=120)[0].split()]
    assert all(w.returncode == 0 for w in workers)
    assert len(reasons) == 4 * sum(map(len, plans))
    assert set(reasons) <= CHECK_REASONS
    return reasons


TARGETS = [pytest.param("redis_server", marks=pytest.mark.redis_server),
           pytest.param("redis_cluster", marks=pytest.mark.cluster)]  # fmt: skip


@pytest.mark.parametrize("target", TARGETS)
def test_processes_checking_the_right_code_at_once_verify_it_once(
    request: pytest.FixtureRequest, target: str, clock: Clock
) -> None:
    """Sixteen threads in four processes check the right code at once, among four wrong guesses
    (fewer than the code's five attempts, so whatever the order the code stays alive until it is
    spent): exactly one check is ok."""
    url = request.getfixturevalue(target).url
    prefix = unique_prefix()
    guard = Guard([], backend=RedisBackend.from_url(url, prefix=prefix), secret="shared", clock=clock)
    code = guard.issue_code(PHONE).code
    assert code is not None
    reasons = checked_at_once(url, prefix, clock.now, [[code] * 3, [code] * 3, [code] * 3, [wrong(code)]])
    assert reasons.count("ok") == 1, reasons
    assert reasons.count("wrong_code") <= 4


@pytest.mark.parametrize("target", TARGETS)
def test_processes_guessing_at_once_spend_exactly_the_attempts(
    request: pytest.FixtureRequest, target: str, clock: Clock
) -> None:
    """Forty-eight wrong guesses at once from sixteen threads in four processes: exactly the code's
    five attempts are evaluated, the rest refused; then the right code is refused too."""
    url = request.getfixturevalue(target).url
    prefix = unique_prefix()
    guard = Guard([], backend=RedisBackend.from_url(url, prefix=prefix), secret="shared", clock=clock)
    code = guard.issue_code(PHONE).code
    assert code is not None
    reasons = checked_at_once(url, prefix, clock.now, [[wrong(code)] * 3] * 4)
    assert reasons.count("wrong_code") == 5, reasons
    assert "ok" not in reasons
    assert guard.check_code(PHONE, code).reason in {"check_attempts", "too_many_checks"}


@pytest.mark.redis_server
def test_one_evalsha_per_issue_and_per_check(redis_server: RedisServer, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    policies = [
        Whitelist(shared=True),
        SameContent(),
        DailyCap(10),
        IPThrottle("20/hour"),
        UnverifiedCap("country"),
    ]
    guard = Guard(policies, backend=backend, secret="s", clock=clock, default_region="CN")
    guard.check(OTHER, content="warm-up", ip="203.0.113.1")  # loads the script once
    codes: list[str | None] = []

    def work() -> None:
        for i in range(3):
            codes.append(guard.issue_code(f"+86138001383{i:02d}", ip="203.0.113.2").code)
        for i in range(3):
            guard.check_code(f"+86138001383{i:02d}", "000000", ip="203.0.113.2")
        code = codes[0]
        assert code is not None
        assert guard.check_code("+8613800138300", code, ip="203.0.113.2").ok  # with its verification

    commands = top_level_commands(redis_server.port, work)
    assert commands == ["EVALSHA"] * 7


@pytest.mark.redis_server
def test_nothing_plain_in_redis_after_codes(redis_server: RedisServer, clock: Clock) -> None:
    prefix = unique_prefix()
    guard = Guard(
        [SameContent(), DailyCap(10), IPThrottle("20/hour"), UnverifiedCap("range")],
        backend=RedisBackend.from_url(redis_server.url, prefix=prefix), secret="s", clock=clock,
        default_region="CN",
    )  # fmt: skip
    sent = []
    for i in range(4):
        phone = f"+86138001384{i:02d}"
        code = guard.issue_code(phone, ip="203.0.113.77").code
        assert code is not None
        sent.append(code)
        guard.check_code(phone, wrong(code), ip="203.0.113.77")
        guard.check_code(phone, code, ip="203.0.113.77")
    guard.issue_code("+8613800138499", ip="203.0.113.77")  # one live, unchecked
    guard.flush()
    client = redis.Redis(port=redis_server.port)
    keys = list(client.scan_iter(match=prefix + "*"))
    dump = b" ".join(keys)
    for stored in keys:
        kind = client.type(stored)
        if not stored.endswith(b":fingerprint"):  # the app's settings, kept on purpose
            assert client.pttl(stored) > 0, f"{stored!r} never expires"
        if kind == b"zset":
            dump += b" ".join(m + repr(s).encode() for m, s in client.zrange(stored, 0, -1, withscores=True))
        elif kind == b"hash":
            dump += b" ".join(b"%s=%s" % item for item in client.hgetall(stored).items())
        else:
            dump += client.get(stored) or b""
    for secret in [b"13800138", b"203.0.113.77", *(code.encode() for code in sent)]:
        assert secret not in dump


@pytest.mark.redis_server
@pytest.mark.parametrize("fail_mode", ["open", "closed", "local"])
def test_fail_modes_on_a_redis_that_dies(tmp_path: Path, clock: Clock, fail_mode: str) -> None:
    server = RedisServer(tmp_path).start()
    try:
        guard = Guard(
            [DailyCap(10)], backend=RedisBackend.from_url(server.url, prefix="f:"), secret="s", clock=clock,
            fail_mode=fail_mode,  # type: ignore[arg-type]
        )  # fmt: skip
        before = guard.issue_code(PHONE).code
        assert before is not None
        server.stop()
        # A code Redis holds is never right, nor wrong, during the outage: it cannot be checked.
        held = guard.check_code(PHONE, before)
        assert (held.ok, held.reason) == (False, "backend_unavailable")
        assert held.retry_after is not None
        during = guard.issue_code(OTHER)
        if fail_mode == "closed":
            assert (during.decision.allowed, during.decision.reason, during.code) == (
                False, "backend_unavailable", None,
            )  # fmt: skip
            assert guard.check_code(OTHER, "123456").reason == "backend_unavailable"
        else:
            # Issued and checked in process; a wrong guess stays wrong.
            assert during.decision.degraded
            assert during.code is not None
            assert guard.check_code(OTHER, wrong(during.code)).reason == "wrong_code"
            assert guard.check_code(OTHER, during.code).ok
        server.start()  # back, empty
        clock.advance(5)
        after = guard.issue_code(PHONE).code
        assert after is not None
        assert guard.check_code(PHONE, after).ok
    finally:
        server.stop()


def test_status_shows_the_live_code_never_the_code(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([DailyCap(10)])
    assert [u.policy for u in guard.status(PHONE)] == ["daily_cap"]  # no code yet
    code = guard.issue_code(PHONE).code
    assert code is not None
    clock.advance(42)
    guard.check_code(PHONE, wrong(code))
    rows = {u.policy: u for u in guard.status(PHONE)}
    live = rows["code"]
    assert (live.used, live.limit, live.remaining, live.age) == (1, 5, 4, 42.0)
    assert code not in repr(rows)
    assert guard.check_code(PHONE, code).ok
    assert "code" not in {u.policy for u in guard.status(PHONE)}  # spent


def test_report_counts_checks_and_conversion(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([])
    for i in range(4):
        phone = f"+86138001385{i:02d}"
        code = guard.issue_code(phone).code
        assert code is not None
        if i % 2:
            assert guard.check_code(phone, code).ok
        else:
            guard.check_code(phone, wrong(code))
    report = guard.report()
    assert report.conversion == 0.5  # codes entered right per code sent
    assert (report.day.checked, report.day.checks, report.day.lockouts) == (4, {"wrong_code": 2}, 0)


def test_rules_from_settings() -> None:
    from smsguard import ConfigError

    guard = Guard.from_settings(
        {"SMSGUARD_CODE_LENGTH": "8", "SMSGUARD_CODE_TTL": "120", "SMSGUARD_CODE_ATTEMPTS": 3,
         "SMSGUARD_CODE_CHECKS_PER_NUMBER": "0", "SMSGUARD_CODE_CHECKS_PER_IP": "5/minute"}
    )  # fmt: skip
    assert guard.flows.codes.rules == CodeRules(8, 120.0, 3, None, "5/minute")
    assert Guard.from_settings({}).flows.codes.rules == CodeRules()
    with pytest.raises(ConfigError, match="SMSGUARD_CODE_LENGTH"):
        Guard.from_settings({"SMSGUARD_CODE_LENGTH": 12})
    with pytest.raises(ConfigError, match="did you mean SMSGUARD_CODE_TTL"):
        Guard.from_settings({"SMSGUARD_CODE_TTLS": 12})


# -- the flows, stepped by hand: no backend -----------------------------------------------------


def stepped(clock: Clock, mode: str = "closed", policies: Any = None) -> Guard:
    return Guard(
        policies if policies is not None else [DailyCap(2)],
        fail_mode=mode,  # type: ignore[arg-type]
        clock=clock,
        secret="s",
        statistics=False,
    )


def returned(flow: Any, answer: Any = None, throw: BaseException | None = None) -> Any:
    with pytest.raises(StopIteration) as done:
        flow.throw(throw) if throw is not None else flow.send(answer)
    return done.value.value


def test_issue_flow_carries_the_code_on_the_decisions_job(clock: Clock) -> None:
    guard = stepped(clock)
    flow = guard.flows.issue_code(PHONE)
    verb, job = next(flow)
    assert verb == "run"
    assert [c.limit for c in job.counters] == [2]
    assert isinstance(job.code, Issue)
    assert job.code.expires_at == clock.now + 600
    state = CodeState("live", "abc", 3, clock.now - 10)
    issued = returned(flow, Outcome(-1, (0,), code=state))
    assert issued.decision.allowed
    assert issued.code == guard.flows.codes.code(guard.identify(PHONE).phone_id, "abc")
    # Denied: no code, whatever the job carried.
    flow = guard.flows.issue_code(PHONE)
    next(flow)
    denied = returned(flow, Outcome(-1, (2,), (30.0,)))
    assert (denied.decision.reason, denied.code) == ("daily_cap", None)


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_issue_flow_through_an_outage(clock: Clock, mode: str) -> None:
    guard = stepped(clock, mode)
    flow = guard.flows.issue_code(PHONE)
    next(flow)
    issued = returned(flow, throw=BackendUnavailable("connection refused"))
    if mode == "closed":
        assert (issued.decision.allowed, issued.decision.reason, issued.code) == (
            False,
            "backend_unavailable",
            None,
        )
        return
    # Issued in process, and checked there: never on the backend.
    assert issued.decision.degraded
    assert issued.code is not None
    flow = guard.flows.check_code(PHONE, issued.code, None)
    with pytest.raises(StopIteration) as done:  # the backend is left alone: no step at all
        next(flow)
    assert done.value.value == CodeCheck(True, None, None, 5)


def test_a_code_the_closed_fail_mode_cannot_issue_is_refused_whole(clock: Clock) -> None:
    """A whitelisted number is allowed with no backend step; its code's own step meeting an
    outage under ``closed`` is the fail mode's refusal, built complete (no allowed copy)."""
    guard = stepped(clock, "closed", [Whitelist([PHONE]), DailyCap(2)])
    flow = guard.flows.issue_code(PHONE)
    verb, job = next(flow)
    assert (verb, job.counters, isinstance(job.code, Issue)) == ("run", (), True)
    issued = returned(flow, throw=BackendUnavailable("connection refused"))
    number = guard.identify(PHONE)
    assert issued.code is None
    assert issued.decision == Decision(
        False,
        number.e164,
        reason="backend_unavailable",
        retry_after=5.0,
        kind="unavailable",
        degraded=True,
        country=number.region,
        phone_hash=number.phone_id,
    )


def test_check_flow_is_one_step_and_reads_its_outcome(clock: Clock) -> None:
    guard = stepped(clock)
    flow = guard.flows.check_code(PHONE, "12a456", "203.0.113.7")
    verb, job = next(flow)
    assert verb == "run"
    assert isinstance(job.code, Guess)
    assert job.code.hashed == ""  # malformed: matches nothing
    assert [c.limit for c in job.code.limits] == [10, 20]
    result = returned(flow, Outcome(-1, (3, 4), code=CodeState("wrong_code", "", 2, clock.now)))
    assert result == CodeCheck(False, "wrong_code", None, 2)
    flow = guard.flows.check_code(PHONE, "123456", "203.0.113.7")
    next(flow)
    refused = returned(flow, Outcome(-1, (3, 20), (0.0, 1200.0), code=CodeState("")))
    assert refused == CodeCheck(False, "too_many_checks", 1200.0, None)


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_check_flow_through_an_outage_never_accepts_what_it_cannot_see(clock: Clock, mode: str) -> None:
    guard = stepped(clock, mode)
    flow = guard.flows.check_code(PHONE, "123456", None)
    next(flow)
    result = returned(flow, throw=BackendUnavailable("connection refused"))
    assert (result.ok, result.reason) == (False, "backend_unavailable")
    assert result.retry_after == 5.0


def test_a_right_check_whose_marks_were_not_written_owes_them(clock: Clock) -> None:
    guard = stepped(clock, "local", [UnverifiedCap("country")])
    flow = guard.flows.check_code(PHONE, "123456", None)
    next(flow)
    verb, changes = flow.send(Outcome(-1, (0,), code=CodeState("ok", UNRECORDED, 4, clock.now)))
    assert verb == "apply"  # sent at once, with what else is owed
    assert [type(c).__name__ for c in changes] == ["Record"]
    result = returned(flow, throw=BackendUnavailable("a slot is down", partial=True))
    assert result.ok  # the check stands; the marks wait for the backend
    assert [type(c).__name__ for c in guard.outbox.pending] == ["Record"]


# -- a property: the guard's checks against a tiny model of the contract ------------------------


class Model:
    """The contract, for one number: a code per issue, live ``ttl`` s, spent by its first right
    check, dead after ``attempts`` wrong ones; an issue while live gives the same code."""

    def __init__(self, ttl: float, attempts: int) -> None:
        self.ttl, self.attempts = ttl, attempts
        self.code: str | None = None
        self.expires = 0.0
        self.left = 0
        self.spent = False
        self.kept = 0.0

    def issue(self, code: str, now: float) -> str:
        if self.code is not None and now < self.expires and not self.spent and self.left > 0:
            return self.code
        self.code, self.expires, self.left, self.spent, self.kept = (
            code,
            now + self.ttl,
            self.attempts,
            False,
            now + 2 * self.ttl,
        )
        return code

    def check(self, guess: str, now: float) -> str | None:
        if self.code is None or self.spent or now >= self.kept:
            return "no_code"
        if now >= self.expires:
            return "code_expired"
        if self.left <= 0:
            return "check_attempts"
        if guess == self.code:
            self.spent = True
            return None
        self.left -= 1
        return "wrong_code"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["issue", "right", "wrong", "garbage", "wait"]),
            st.floats(0, 400, allow_nan=False),
        ),
        max_size=30,
    )
)
def test_checks_follow_the_model(steps: list[tuple[str, float]]) -> None:
    clock = Clock()
    guard = Guard(
        [],
        clock=clock,
        secret="s",
        code_rules=CodeRules(ttl=300, max_attempts=3, per_number=None, per_ip=None),
    )
    model = Model(300, 3)
    code: str | None = None
    for action, seconds in steps:
        if action == "wait":
            clock.advance(seconds)
        elif action == "issue":
            issued = guard.issue_code(PHONE).code
            assert issued is not None
            assert model.issue(issued, clock.now) == issued  # the same code while live
            code = issued
        else:
            guess = {"right": code or "000000", "wrong": wrong(code or "000000"), "garbage": "12 3x"}[action]
            result = guard.check_code(PHONE, guess)
            expected = model.check(guess, clock.now)
            assert (result.ok, result.reason) == (expected is None, expected)


def test_readme_checking_the_code_runs_when_pasted() -> None:
    """The README's "Checking the code" block, run as a script, prints what its comments say."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Checking the code") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("\n```\n", start)]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "True 6",
        "CodeCheck(ok=False, reason='wrong_code', retry_after=None, attempts_left=4)",
        "True",
        "no_code",
    ]
    for line in ("# True 6", "# CodeCheck(ok=False, reason='wrong_code', retry_after=None, attempts_left=4)",
                 "# True", "# no_code"):  # fmt: skip
        assert line in code, "the comment says what the line prints"


def test_threads_checking_wrong_codes_spend_at_most_the_attempts(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([], code_rules=CodeRules(per_number="1000/day", per_ip=None))
    code = guard.issue_code(PHONE).code
    assert code is not None
    results: list[CodeCheck] = []
    start = threading.Barrier(8)

    def hammer(k: int) -> None:
        start.wait()
        for j in range(5):
            guess = f"{(int(code) + 1 + k * 5 + j) % 10**6:06d}"
            results.append(guard.check_code(PHONE, guess))

    workers = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reasons = [r.reason for r in results]
    assert reasons.count("wrong_code") == 5
    assert reasons.count("check_attempts") == 35
    assert sorted(r.attempts_left for r in results if r.reason == "wrong_code") == [0, 1, 2, 3, 4]
    assert guard.check_code(PHONE, code).reason == "check_attempts"


def test_whitelisted_numbers_get_codes_too(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist([PHONE]), Whitelist(shared=True, name="shared"), DailyCap(1)])
    for _ in range(3):  # exempt from the cap, in code: the code is the same live one
        issued = guard.issue_code(PHONE)
        assert issued.decision.reason == "exempt"
        assert issued.code is not None
    guard.add_number("shared", OTHER)
    first = guard.issue_code(OTHER)
    assert (first.decision.reason, first.decision.policy) == ("exempt", "shared")
    assert first.code is not None
    assert guard.check_code(OTHER, first.code).ok
    assert guard.check_code(PHONE, issued.code).ok
