"""A flood's denials from the deny cache before the attempt is planned whole
(``Planner.number_plan``, ``DenyCache.early``): the very Decisions the whole plan gets, and the
guards it is off for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from ipaddress import ip_address
from zoneinfo import ZoneInfo

from conftest import Clock
from hypothesis import given, settings
from hypothesis import strategies as st

import smsguard
from smsguard import (
    Blacklist,
    DailyCap,
    Decision,
    Guard,
    IPThrottle,
    PhoneRate,
    SameContent,
    Suspend,
    Whitelist,
)
from smsguard.policies import JUDGED, NUMBER
from smsguard.pumping import ContentRules, Countries, UnverifiedCap

VICTIM = "+8613800138000"
TYPED = [VICTIM, "138 0013 8000", "008613800138000", "13900139000"]
CONTENTS = ["code 1", "code 2", "code 3"]
IPS = ["203.0.113.1", "203.0.113.2", "2001:db8::1"]


def four(same: float = 120) -> list[object]:
    return [
        SameContent(same),
        DailyCap(4, tz="Asia/Shanghai"),
        PhoneRate("1/minute;3/hour"),
        IPThrottle("2/hour"),
    ]


def guard(clock: Clock, cache: bool, policies: list[object] | None = None) -> Guard:
    return Guard(
        policies or four(),
        clock=clock,
        secret="s",
        default_region="CN",
        deny_cache=cache,  # type: ignore[arg-type]
    )


def planned_whole(clock: Clock) -> Guard:
    """A guard with the deny cache whose every attempt is planned whole, as before the early
    denial (whose decisions the early one must give, field for field)."""
    g = guard(clock, True)
    g.flows._early = False
    return g


def verdict(d: Decision) -> tuple[object, ...]:
    """What the backend's own answer gives alike (the cache leaves counters it does not know
    out of ``remaining``)."""
    return (d.allowed, d.policy, d.reason, d.retry_after, d.limit, d.kind)


def seen(d: Decision) -> tuple[object, ...]:
    """All a caller can read of a decision."""
    return (d.allowed, d.phone, d.policy, d.reason, d.retry_after, dict(d.remaining), d.limit, d.kind,
            d.degraded, d.country, d.phone_hash, d.shadowed, d.quotas)  # fmt: skip


def flood(g: Guard, n: int) -> list[Decision]:
    return [g.check(TYPED[i % 3], content=f"code {i}", ip=f"10.0.{i // 250}.{i % 250}") for i in range(n)]


def test_a_flood_is_denied_before_planning_with_the_decisions_planning_gives(clock: Clock) -> None:
    early, whole, backend = (guard(clock, cache, four(30)) for cache in (True, True, False))
    whole.flows._early = False
    assert early.planner.by_number is not None
    assert [seen(d) for d in flood(early, 1)] == [seen(d) for d in flood(whole, 1)]
    flood(backend, 1)
    # The admitted content's counter frees (it may name a longer wait than the number's while
    # it is full, so until then attempts are planned whole); the number's minute stays full.
    clock.advance(31)
    planned = []
    plan = early.planner.plan
    early.planner.plan = lambda *a: planned.append(a) or plan(*a)  # type: ignore[method-assign]
    ours, theirs = flood(early, 300), flood(whole, 300)
    assert [seen(d) for d in ours] == [seen(d) for d in theirs]
    assert [verdict(d) for d in ours] == [verdict(d) for d in flood(backend, 300)]
    assert not any(d.allowed for d in ours)
    assert {d.retry_after for d in ours} == {29.0}
    assert len(planned) == 1, "the first denial is planned and asks the backend; the rest are not planned"
    assert early.flows.denials is not None
    assert early.flows.denials.denied == 299


def test_a_full_counter_of_the_content_or_ip_sends_attempts_to_the_whole_plan(clock: Clock) -> None:
    early, whole = guard(clock, True), planned_whole(clock)
    for g in (early, whole):
        g.check(VICTIM, content="code 1", ip=IPS[0])
    clock.advance(61)
    # The same content waits longer (120 s) than the number's minute: named by the whole plan.
    for _ in range(3):
        assert seen(early.check(VICTIM, content="code 1", ip=IPS[1])) == seen(
            whole.check(VICTIM, content="code 1", ip=IPS[1])
        )
        clock.advance(1)
    assert early.check(VICTIM, content="code 1", ip=IPS[1]).reason == "same_content"


def test_a_reset_or_a_refund_reaches_the_early_denial_at_once(clock: Clock) -> None:
    g = guard(clock, True)
    admitted = []
    for i in range(3):  # the number's hour full (3/hour), a minute apart, each from its own IP
        admitted.append(g.check(VICTIM, content=f"code {i}", ip=f"10.0.0.{i}"))
        clock.advance(200)
    assert all(d.allowed for d in admitted)
    assert g.flows.denials is not None
    assert [g.check(VICTIM, content=f"more {i}", ip=f"10.0.1.{i}").reason for i in range(3)] == [
        "phone_rate"
    ] * 3
    assert g.flows.denials.denied == 2, "the first asked the backend, the others were denied early"
    g.refund(admitted[0])
    assert g.check(VICTIM, content="after the refund", ip="10.0.2.1").allowed
    assert not g.check(VICTIM, content="full again", ip="10.0.2.2").allowed
    g.reset(VICTIM)
    assert g.check(VICTIM, content="after the reset", ip="10.0.2.3").allowed


def test_off_where_a_policy_does_not_say_what_it_counts_by(clock: Clock) -> None:
    class Rate(PhoneRate):  # a subclass may read more: it must say so again
        pass

    class Mine:  # a policy of one's own, saying nothing
        name, reason = "mine", "mine"

        def review(self, attempt: object, now: float) -> tuple[()]:
            return ()

    assert guard(clock, True, [Mine(), *four()]).planner.by_number is None
    assert guard(clock, True, [Rate("1/minute"), IPThrottle()]).planner.by_number is None
    assert guard(clock, True, [DailyCap(3, shadow=True), PhoneRate()]).planner.by_number is None
    assert Guard(four(), secret="s", dry_run=True).planner.by_number is None  # type: ignore[arg-type]
    by = guard(clock, True).planner.by_number
    assert by is not None
    assert [p.counted_by for p, _, _ in by] == [NUMBER, NUMBER]
    # On with the switch, the lists and the rest of the recommended set, which say so too.
    assert guard(clock, True, [Suspend(), *four()]).planner.by_number is not None
    recommended = Guard(smsguard.recommended(["CN"], daily_budget=10.0), secret="s", deny_cache=True)
    assert recommended.planner.by_number is not None
    assert {p.name: p.counted_by for p in recommended.planner.policies}["countries"] == JUDGED
    # Off too for a guard without the cache (nothing to answer from).
    assert guard(clock, False).flows.denials is None


def test_a_learning_policy_holds_the_early_denial_off_until_it_enforces(clock: Clock) -> None:
    until = clock() + 3600
    g = guard(clock, True, [*four(), UnverifiedCap("country", "100/hour", learn_until=until)])
    assert g.planner.early_from == until
    assert g.flows.denials is not None
    for learning in (True, False):
        assert g.check(VICTIM, content="first", ip="10.0.0.1").allowed
        clock.advance(31)
        for i in range(3):
            assert g.check(VICTIM, content="again", ip=f"10.0.1.{i}").reason == "phone_rate"
        plan = g.planner.number_plan(VICTIM, "x", "10.0.0.9", clock(), False)
        if learning:  # in shadow: every job goes to the backend, none is planned early
            assert plan is None
            assert g.flows.denials.denied == 0
            clock.advance(3600)
    assert plan is not None
    assert g.flows.denials.denied == 2, "the first denial asks the backend, the next are early"


def judged() -> list[object]:
    """Policies that judge by the number and the text, before the four."""
    return [
        Suspend(),
        Whitelist([TYPED[3]], region="CN", shared=True),
        Blacklist(shared=True),
        Countries(allow=["CN"]),
        ContentRules(),
        *four(),
    ]


step = st.tuples(
    st.sampled_from([0, 0, 1, 30, 59, 60, 61, 119, 121, 1800, 3600, 86400]),
    st.integers(0, len(TYPED) - 1),
    st.integers(0, len(CONTENTS) - 1),
    st.integers(0, len(IPS) - 1),
    st.sampled_from(["", "", "", "refund", "reset"]),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=80), start=st.floats(0, 86400))
def test_every_decision_is_the_whole_plans(steps: list[tuple[int, int, int, int, str]], start: float) -> None:
    same_as_whole(steps, start, four, TYPED, CONTENTS)


# With the lists, the switch, a country allow-list and the rules on the text: a number of another
# country, a whitelisted one, a text with a link; the switch and a shared list entry flipped.
JUDGED_TYPED = [*TYPED, "+447911123456"]
JUDGED_CONTENTS = [*CONTENTS, "see t.cn/abc"]
judged_step = st.tuples(
    st.sampled_from([0, 0, 0, 1, 30, 61, 121, 3600, 86400]),
    st.integers(0, len(JUDGED_TYPED) - 1),
    st.integers(0, len(JUDGED_CONTENTS) - 1),
    st.integers(0, len(IPS) - 1),
    st.sampled_from(["", "", "", "refund", "reset", "switch", "block"]),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(judged_step, min_size=1, max_size=80), start=st.floats(0, 86400))
def test_every_decision_is_the_whole_plans_with_lists_and_the_switch(
    steps: list[tuple[int, int, int, int, str]], start: float
) -> None:
    same_as_whole(steps, start, judged, JUDGED_TYPED, JUDGED_CONTENTS)


def same_as_whole(
    steps: list[tuple[int, int, int, int, str]],
    start: float,
    policies: Callable[[], list[object]],
    typed: list[str],
    contents: list[str],
) -> None:
    """Each step's decision by a guard with the early denial, one planning every attempt whole
    (both with the deny cache) and one without the cache: the same, field for field where both
    use the cache, verdict for verdict against the backend's own answer."""
    clock = Clock(1772409600.0 + start)
    early, whole, backend = (guard(clock, cache, policies()) for cache in (True, True, False))
    whole.flows._early = False
    suspended: bool = False
    blocked: set[str] = set()
    for dt, p, c, i, then in steps:
        clock.advance(dt)
        a = early.check(typed[p], content=contents[c], ip=IPS[i])
        b = whole.check(typed[p], content=contents[c], ip=IPS[i])
        o = backend.check(typed[p], content=contents[c], ip=IPS[i])
        assert seen(a) == seen(b)
        assert verdict(a) == verdict(o)
        kept_denials_are_known(early, clock.now)
        if then == "refund" and a.allowed:
            for g, d in ((early, a), (whole, b), (backend, o)):
                g.refund(d)
        elif then == "reset":
            for g in (early, whole, backend):
                g.reset(typed[p])
        elif then == "switch":
            suspended = not suspended
            for g in (early, whole, backend):
                g.suspend() if suspended else g.resume()
        elif then == "block":
            number = early.identify(typed[p]).e164
            for g in (early, whole, backend):
                g.remove_number("blacklist", number) if number in blocked else g.add_number(
                    "blacklist", number
                )
            blocked ^= {number}


def kept_denials_are_known(g: Guard, now: float) -> None:
    """Every early denial kept for a number, while it holds, is one ``may_deny`` says the
    number may have: an attempt ``may_deny`` clears is let past ``recall`` unasked."""
    denials = g.flows.denials
    assert denials is not None
    for table in denials._kept:
        for number, kept in table.items():
            if kept.since <= now < kept.until:
                assert denials.may_deny(number, now), (number, kept)


# A number planned once: where every policy counted by the number is steady (``Steady``), its
# early denial is kept (``DenyCache.recall``) and the next ones are not planned at all.


def counting(g: Guard) -> list[object]:
    """The calls of ``g``'s ``plan_number`` from now on (each one a number planned)."""
    calls: list[object] = []
    plan = g.planner.plan_number
    g.planner.plan_number = lambda *a, **kw: calls.append(a) or plan(*a, **kw)  # type: ignore[method-assign]
    return calls


def fill_the_hour(*guards: Guard, clock: Clock) -> None:
    """Three sends to the victim a minute apart (its 3/hour full), then 121 s on (the contents'
    counters free)."""
    for i in range(3):
        assert all(g.check(VICTIM, content=f"send {i}", ip=IPS[i]).allowed for g in guards)
        clock.advance(61 if i < 2 else 121)


def test_a_flood_s_number_is_planned_once_while_its_denial_holds(clock: Clock) -> None:
    early, whole = guard(clock, True), planned_whole(clock)
    assert early.planner.steady
    fill_the_hour(early, whole, clock=clock)
    planned = counting(early)
    ours, theirs = flood(early, 300), flood(whole, 300)
    assert len(planned) <= 2, "the backend asked once, the number planned once, the rest recalled"
    assert [seen(d) for d in ours] == [seen(d) for d in theirs]  # (remaining: planned when read)
    assert {d.reason for d in ours} == {"phone_rate"}
    clock.advance(1)  # past the horizon: the backend is asked again, then the number planned again
    del planned[:]
    ours, theirs = flood(early, 10), flood(whole, 10)
    assert len(planned) <= 2
    assert [seen(d) for d in ours] == [seen(d) for d in theirs]


def test_a_kept_denial_ends_with_the_calendar_day_in_its_zone() -> None:
    """Kept with an hour's horizon, a denial by the daily cap still ends at local midnight in
    Asia/Shanghai (16:00 UTC), and every decision across it is the whole plan's."""
    midnight = datetime(2026, 3, 2, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    clock = Clock(midnight - 300)

    def day_guard(cache: float) -> Guard:
        policies = [SameContent(30), DailyCap(2, tz="Asia/Shanghai"), IPThrottle("100/hour")]
        return Guard(
            policies,  # type: ignore[arg-type]
            clock=clock,
            secret="s",
            default_region="CN",
            deny_cache=cache,
            statistics=False,  # no write owed: every attempt may be denied early
        )

    early, whole, backend = day_guard(3600), day_guard(3600), day_guard(0)
    whole.flows._early = False
    assert early.planner.steady
    planned = counting(early)
    decided: list[tuple[float, Decision]] = []
    plans_kept = 0  # numbers planned while a denial is kept (the same content's 30 s over)
    for i in range(60):  # two sends, then an attempt every 7 s, to and past midnight
        n = len(planned)
        a, b, o = (g.check(TYPED[i % 3], content=f"code {i}", ip=IPS[i % 2]) for g in (early, whole, backend))
        if -200 < clock() - midnight < 0:
            plans_kept += len(planned) - n
        n = len(planned)
        assert seen(a) == seen(b)
        del planned[n:]  # planned when read
        assert verdict(a) == verdict(o)
        decided.append((clock() - midnight, a))
        clock.advance(7 if i else 60)
    before = [d for t, d in decided if t < 0]
    after = [d for t, d in decided if t >= 0]
    assert [d.allowed for d in before[:2]] == [True, True]
    assert {d.reason for d in before[2:]} == {"daily_cap"}
    assert all(d.retry_after == -t for t, d in decided[2:] if t < 0), "exact: until local midnight"
    assert after[0].allowed, "the next day's first attempt goes to the backend, and is sent"
    assert plans_kept <= 1, "before midnight the number is planned once, not per attempt"


def test_a_list_change_the_switch_or_a_reset_reaches_a_kept_denial_at_once(clock: Clock) -> None:
    g = guard(clock, True, [Suspend(), Whitelist(shared=True), *four()])
    fill_the_hour(g, clock=clock)
    assert {d.reason for d in flood(g, 5)} == {"phone_rate"}
    assert g.flows.denials is not None
    assert g.flows.denials._kept[0], "the victim's denial is kept"
    g.add_number("whitelist", VICTIM)
    assert g.check(VICTIM, content="let me in", ip=IPS[0]).reason == "exempt"
    g.remove_number("whitelist", VICTIM)
    assert {d.reason for d in flood(g, 3)} == {"phone_rate"}
    g.suspend()
    assert g.check(VICTIM, content="stop", ip=IPS[0]).reason == "suspended"
    g.resume()
    assert {d.reason for d in flood(g, 3)} == {"phone_rate"}
    g.reset(VICTIM)
    assert g.check(VICTIM, content="after the reset", ip=IPS[0]).allowed


def test_a_text_rule_is_asked_again_before_a_kept_denial(clock: Clock) -> None:
    """ContentRules reads the text, so it is not steady: a kept denial is recalled only once it
    has passed the attempt's text, and a link is refused by it, as the whole plan refuses it."""
    early, whole = guard(clock, True, judged()), guard(clock, True, judged())
    whole.flows._early = False
    assert early.planner.steady
    fill_the_hour(early, whole, clock=clock)
    planned = counting(early)
    for content in ["code 7", "see t.cn/abc", "code 8", "code 9"]:
        a = early.check(VICTIM, content=content, ip=IPS[0])
        assert seen(a) == seen(whole.check(VICTIM, content=content, ip=IPS[0]))
    n = len(planned)
    assert early.check(VICTIM, content="x", ip=IPS[1]).reason == "phone_rate"
    assert len(planned) == n, "recalled, once the text passed"
    assert early.check(VICTIM, content="t.cn/y", ip=IPS[1]).reason == "content_link"
    assert len(planned) == n + 1, "the text refused: planned (and refused by the whole plan)"


def test_a_denial_worked_out_before_a_change_is_not_kept(clock: Clock) -> None:
    g = guard(clock, True)
    fill_the_hour(g, clock=clock)
    cache = g.flows.denials
    assert cache is not None
    cache._drop(None)
    known = cache._known

    def changed_meanwhile(job: object) -> object:  # another thread's change, while this one reads
        found = known(job)  # type: ignore[arg-type]
        cache._drop(None)
        return found

    cache._known = changed_meanwhile  # type: ignore[method-assign]
    assert g.check(VICTIM, content="x", ip=IPS[0]).reason == "phone_rate"
    assert not cache._kept[0], "worked out before the change: not kept"
    cache._known = known  # type: ignore[method-assign]
    assert g.check(VICTIM, content="y", ip=IPS[0]).reason == "phone_rate"
    assert cache._kept[0]


def test_an_attempt_with_a_context_is_denied_early_as_the_whole_plan_denies_it(clock: Clock) -> None:
    """The web adapters give a context (the route they count by, a template's parameters, the
    code): the policies that judge from it are asked with it, so a flood through them is denied
    early too, with the whole plan's Decisions."""
    early, whole = guard(clock, True, judged()), guard(clock, True, judged())
    whole.flows._early = False
    fill_the_hour(early, whole, clock=clock)
    route = "POST /v1/sms/send.json"
    contexts = [
        {"route": route, "code": "4821"},
        {"route": route, "params": ["4821", "5"]},
        {"route": route, "code": "12"},  # no code of 4 to 8 digits
        {"route": route, "params": ["see t.cn/abc"]},
        {"code": "4821"},  # the route read as a text: a link to "send.json"
    ]
    planned = counting(early)
    for i in range(50):
        context = contexts[i % len(contexts)]
        n = len(planned)
        a = early.check(TYPED[i % 3], content=route, ip=IPS[i % 3], context=context)
        plans = len(planned) - n
        assert seen(a) == seen(whole.check(TYPED[i % 3], content=route, ip=IPS[i % 3], context=context))
        del planned[n + plans :]  # planned when read
        if i >= len(contexts):
            assert plans == (0 if i % len(contexts) < 2 else 1), "recalled unless the text is refused"
    reasons = [early.check(VICTIM, content=route, ip=IPS[0], context=c).reason for c in contexts]
    assert reasons == ["phone_rate", "phone_rate", "content_code", "content_link", "content_link"]


def test_an_address_already_parsed_is_denied_early_as_the_whole_plan_denies_it(clock: Clock) -> None:
    early, whole = guard(clock, True), planned_whole(clock)
    fill_the_hour(early, whole, clock=clock)
    whole_plans: list[object] = []
    plan = early.planner.plan
    early.planner.plan = lambda *a: whole_plans.append(a) or plan(*a)  # type: ignore[method-assign]
    addresses = [ip_address(ip) for ip in IPS]
    ours = [early.check(TYPED[i % 3], content=f"c {i}", ip=addresses[i % 3]) for i in range(30)]
    assert len(whole_plans) <= 1, "the first denial may ask the backend; the rest are denied early"
    theirs = [whole.check(TYPED[i % 3], content=f"c {i}", ip=addresses[i % 3]) for i in range(30)]
    assert [seen(d) for d in ours] == [seen(d) for d in theirs]


def test_a_flood_through_the_asgi_middleware_is_denied_early(clock: Clock) -> None:
    """The adapters give the check a context (the route they count by) and a parsed address:
    a flood through them is denied from the deny cache, the number planned once."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from smsguard.adapters.asgi import SMSGuardMiddleware

    async def send(request: Request) -> PlainTextResponse:
        return PlainTextResponse("sent")

    g = guard(clock, True, [*four()[:3], IPThrottle("1000/hour")])
    app = Starlette(routes=[Route("/sms/send", send, methods=["POST"])])
    app.add_middleware(SMSGuardMiddleware, guard=g)
    with TestClient(app, client=("203.0.113.9", 5000)) as client:
        statuses = []
        for i in range(3):  # the number's hour full
            statuses.append(client.post("/sms/send", json={"phone": TYPED[i % 3]}).status_code)
            clock.advance(121)
        planned = counting(g)
        whole_plans = []
        plan = g.planner.plan
        g.planner.plan = lambda *a: whole_plans.append(a) or plan(*a)  # type: ignore[method-assign]
        statuses += [client.post("/sms/send", json={"phone": TYPED[i % 3]}).status_code for i in range(50)]
    assert statuses == [200] * 3 + [429] * 50
    assert len(whole_plans) <= 1, "the first denial asks the backend; the rest are denied early"
    assert len(planned) <= 2, "and the number is planned once"
