"""MemoryBackend: bounded by expiry alone, never by evicting live counters."""

from __future__ import annotations

import random

from smsguard import Counter, DailyCap, Flag, Guard, Job, MemoryBackend, Receipt, SameContent, SetFlag
from smsguard.plan import frees_last

VICTIM = "+8613800138000"


def job(now: float, *counters: Counter, token: str = "t") -> Job:
    return Job(now, token, (), counters)


def test_flood_of_fresh_keys_does_not_erase_a_live_count() -> None:
    backend = MemoryBackend(sweep_batch=8)
    assert backend.run(job(0, Counter("victim", 1, 86400))).denied == -1
    for i in range(20000):  # the attacker floods fresh keys that expire quickly
        backend.run(job(i * 0.01, Counter(f"junk{i}", 1, i * 0.01 + 1)))
    out = backend.run(job(250, Counter("victim", 1, 86650)))
    assert out.denied == 0
    assert frees_last(out.waits)[1] == 86400 - 250


def test_expired_keys_go_away_as_decisions_run() -> None:
    backend = MemoryBackend(sweep_batch=256)
    for i in range(10000):
        backend.run(job(0, Counter(f"k{i}", 1, 30)))
    assert len(backend) == 10000
    backend.run(job(29.9, Counter("late", 1, 59.9)))
    assert len(backend) == 10001, "nothing is dropped before it expires"
    for _ in range(40):  # ordinary traffic after the window: 256 swept per decision
        backend.run(job(31, Counter("other", 5, 61)))
    assert len(backend) == 2  # "late" (alive until 59.9) and "other"


def test_sweep_drops_all_expired_at_once() -> None:
    backend = MemoryBackend()
    for i in range(5000):
        backend.run(job(0, Counter(f"k{i}", 2, 10 + i % 7)))
    early = sum(1 for i in range(5000) if 10 + i % 7 <= 12.5)
    assert backend.sweep(now=12.5) == early
    assert backend.sweep(now=100) == 5000 - early
    assert len(backend) == 0


def test_sweep_goes_by_whole_seconds() -> None:
    backend = MemoryBackend()
    for key, expires in [("a", 12.25), ("b", 12.5), ("c", 13.0)]:
        backend.run(job(0, Counter(key, 1, expires)))  # all three are filed under the second 13
    backend.run(job(1, Counter("a", 2, 14.2)))  # a's last hit moves on to the second 15
    assert backend.sweep(now=12.9) == 0, "b has expired, but its second is not over"
    assert backend.sweep(now=13) == 2  # b and c; a is filed again, under 15
    assert backend.run(job(13, Counter("a", 2, 23))).counts == (1,)
    assert backend.sweep(now=15) == 0, "a's hit expiring at 23 keeps it"
    assert backend.sweep(now=23) == 1
    assert len(backend) == 0


def test_key_alive_until_its_last_hit_expires() -> None:
    backend = MemoryBackend()
    backend.run(job(0, Counter("k", 3, 10)))
    backend.run(job(5, Counter("k", 3, 15)))
    assert backend.sweep(now=12) == 0
    assert backend.run(job(12, Counter("k", 1, 22))).counts == (1,)
    assert backend.sweep(now=22) == 1


def test_out_of_order_hits_stay_sorted() -> None:
    backend = MemoryBackend()
    for expires in [50, 30, 40]:  # threads may commit out of clock order
        backend.run(job(0, Counter("k", 5, expires)))
    out = backend.run(job(1, Counter("k", 3, 60)))
    assert frees_last(out.waits) == (0, 29), "the oldest-expiring hit frees the slot"


def test_refund_removes_one_hit_only() -> None:
    backend = MemoryBackend()
    backend.run(job(0, Counter("k", 5, 10)))
    backend.run(job(0, Counter("k", 5, 10)))
    backend.apply([Receipt("t", (Counter("k", 5, 10.0), Counter("missing", 1, 3.0)))])
    assert backend.run(job(1, Counter("k", 5, 11))).counts == (1,)


def test_single_hit_refunded_taken_again_and_swept() -> None:
    backend = MemoryBackend()
    backend.run(job(0, Counter("k", 1, 10)))
    backend.apply([Receipt("t", (Counter("k", 1, 10),))])
    assert len(backend) == 0
    assert backend.run(job(1, Counter("k", 1, 11))).counts == (0,)
    assert backend.run(job(2, Counter("k", 1, 12))).denied == 0, "the hit taken again counts"
    assert backend.sweep(now=10) == 0, "the refunded hit's filing does not drop the new one"
    assert backend.sweep(now=11) == 1
    assert len(backend) == 0


def test_expired_single_hit_is_replaced() -> None:
    backend = MemoryBackend()
    backend.run(job(0, Counter("k", 1, 10)))
    assert backend.run(job(20, Counter("k", 1, 30))).counts == (0,)
    out = backend.run(job(25, Counter("k", 1, 35)))
    assert frees_last(out.waits) == (0, 5)


def test_clear_and_sets() -> None:
    backend = MemoryBackend()
    backend.apply([SetFlag("wl")])
    backend.run(job(0, Counter("k", 5, 10)))
    backend.clear()
    assert len(backend) == 0
    assert backend.run(Job(0, "t", (Flag("wl"),), ())).flag == -1


def test_guard_flood_of_random_numbers_is_freed_after_the_day() -> None:
    now = [1772424000.0]
    backend = MemoryBackend()
    guard = Guard([SameContent(), DailyCap(10, tz="Asia/Shanghai")], backend=backend, clock=lambda: now[0])
    rng = random.Random(7)
    guard.check(VICTIM, content="x")
    for _ in range(3000):
        guard.check(f"+86138{rng.randrange(10**8):08d}", content="x")
    assert len(backend) > 5000
    now[0] += 86400
    backend.sweep(now[0])
    assert len(backend) == 0
