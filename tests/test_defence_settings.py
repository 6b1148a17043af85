"""The whole defence from settings: COUNTRIES, DAILY_BUDGET (and prices), RECOMMENDED, in flat
settings and Django's SMSGUARD dict; a Flask app and a Django project configured from settings
alone decide as recommended(...) built in code, on the same traffic; and a guard from settings
without COUNTRIES says, once, that it texts any country."""

from __future__ import annotations

import json
import logging
import random
import warnings
from typing import Any

import django_app  # noqa: F401  (configures Django for this process)
import pytest
from conftest import Clock
from django.test import Client, override_settings
from flask import Flask, jsonify

from smsguard import Guard, recommended
from smsguard.adapters.django import configured
from smsguard.adapters.django import guard as django_guard
from smsguard.adapters.flask import SMSGuard
from smsguard.checks import AnyCountry
from smsguard.errors import ConfigError
from smsguard.pumping import ChallengeCap, ContentRules, Countries, LearnedCap, SpendCap

SECRET = "same-secret"
SERVED = ["GB", "FR"]


def built(**settings: Any) -> Guard:
    return Guard.from_settings(
        {"SMSGUARD_SECRET": SECRET, **{f"SMSGUARD_{k}": v for k, v in settings.items()}}
    )


def attempt(guard: Guard, phone: str) -> Any:
    return guard.check(phone, content="Your code is 4821", ip="198.51.100.1")


def shape(guard: Guard) -> list[tuple[str, str, bool]]:
    """Each policy's type, name and shadow: what makes the set."""
    return [(type(p).__name__, p.name, p.name in guard.planner.shadows) for p in guard.policies]


# -- the keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("countries", [["GB", "FR"], "GB,FR", " gb , fr "])
def test_countries_serve_those_regions_alone(countries: Any) -> None:
    guard = built(COUNTRIES=countries)
    assert attempt(guard, "+447400123456").allowed
    assert attempt(guard, "+33612345678").allowed
    refused = attempt(guard, "+12015550123")
    assert (refused.allowed, refused.reason) == (False, "country_not_allowed")
    premium = attempt(guard, "+449098790000")
    assert (premium.allowed, premium.reason) == (False, "number_type"), "a served country's premium line"


def test_country_caps_from_a_string() -> None:
    guard = built(COUNTRIES="GB,FR", COUNTRY_CAPS="FR=2", SAME_CONTENT_WINDOW=0, PHONE_RATE=0, IP_RATE=0)
    numbers = ["+33612345678", "+33612345679", "+33612345680"]
    assert [attempt(guard, n).allowed for n in numbers] == [True, True, False]
    assert attempt(guard, "+447400123456").allowed, "GB has no cap"


def test_daily_budget_priced_per_country() -> None:
    # 0.10 a code to GB, 0.50 to FR: a budget of 1.00 takes 10 GB codes or 2 FR ones.
    guard = built(
        COUNTRIES="GB,FR",
        DAILY_BUDGET="1.00",
        PRICES="GB=0.10,FR=0.50",
        SAME_CONTENT_WINDOW=0,
        PHONE_RATE=0,
        IP_RATE=0,
        DAILY_CAP=0,
    )
    spend = next(p for p in guard.policies if isinstance(p, SpendCap))
    assert (spend.price("GB"), spend.price("FR"), spend.price("DE")) == (1000, 5000, 500)
    assert attempt(guard, "+33612345678").allowed
    assert attempt(guard, "+33612345679").allowed
    refused = attempt(guard, "+447400123456")
    assert (refused.allowed, refused.reason) == (False, "budget"), "1.00 is spent"


def test_daily_messages_and_default_price() -> None:
    guard = built(COUNTRIES="GB", DAILY_MESSAGES=2, DEFAULT_PRICE=0.2, SAME_CONTENT_WINDOW=0, PHONE_RATE=0)
    spend = next(p for p in guard.policies if isinstance(p, SpendCap))
    assert (spend.daily_messages, spend.daily_budget, spend.default_price) == (2, None, 2000)
    assert [attempt(guard, f"+4474001234{i:02d}").reason for i in range(3)] == [None, None, "budget"]


def test_recommended_is_the_set_code_builds() -> None:
    guard = built(RECOMMENDED=True, COUNTRIES="GB,FR", DAILY_BUDGET=50)
    in_code = Guard(recommended(SERVED, daily_budget=50.0), secret=SECRET)
    assert shape(guard) == shape(in_code)
    assert [type(p) for p in guard.policies][1:3] == [Countries, ContentRules]
    assert sum(isinstance(p, LearnedCap) for p in guard.policies) == 3
    assert sum(isinstance(p, ChallengeCap) for p in guard.policies) == 3


def test_recommended_keeps_the_lists_and_the_tuned_rules() -> None:
    guard = built(
        RECOMMENDED="yes", COUNTRIES="GB", WHITELIST="+447400999999", DAILY_CAP=4, SHADOW="learned_range"
    )
    names = [p.name for p in guard.policies]
    assert names[:3] == ["suspend", "whitelist", "countries"], "lists before the country rule, as ever"
    cap = next(p for p in guard.policies if p.name == "daily_cap")
    assert cap.limit == 4  # type: ignore[attr-defined]
    assert guard.planner.shadows == {"learned_range"}


def test_recommended_without_countries_serves_all_but_refuses_number_types() -> None:
    with pytest.warns(AnyCountry):
        guard = built(RECOMMENDED=True)
    countries = next(p for p in guard.policies if isinstance(p, Countries))
    assert countries.allow is None
    assert attempt(guard, "+12015550123").allowed
    assert attempt(guard, "+449098790000").reason == "number_type"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"COUNTRIES": "GB,Narnia"}, "SMSGUARD_COUNTRIES"),
        ({"COUNTRIES": "GB", "DAILY_BUDGET": "5", "PRICES": "GB=cheap"}, "SMSGUARD_PRICES"),
        ({"COUNTRIES": "GB", "DAILY_BUDGET": "5", "PRICES": "GB"}, "SMSGUARD_PRICES"),
        ({"COUNTRIES": "GB", "DAILY_BUDGET": "-5"}, "SMSGUARD_DAILY_BUDGET"),
        ({"COUNTRIES": "GB", "DAILY_BUDGET": "5", "BUDGET_ALARM": "2"}, "SMSGUARD_BUDGET_ALARM"),
        ({"COUNTRIES": "GB", "COUNTRY_CAPS": "GB=1.5"}, "SMSGUARD_COUNTRY_CAPS"),
        ({"COUNTRIES": "GB", "RECOMMENDED": "maybe"}, "SMSGUARD_RECOMMENDED"),
        ({"COUNTRIES": "GB", "RECOMMENDED": True, "LEARN_UNTIL": "soon"}, "SMSGUARD_LEARN_UNTIL"),
        ({"COUNTRIES": "GB", "SHADOW": "learned_range"}, "SMSGUARD_SHADOW"),
    ],
)
def test_bad_values_name_their_key(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        built(**settings)


def test_a_misspelt_key_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match="did you mean SMSGUARD_COUNTRIES"):
        Guard.from_settings({"SMSGUARD_COUNTRY": "GB"})
    with pytest.raises(ConfigError, match="did you mean SMSGUARD_DAILY_BUDGET"):
        Guard.from_settings({"SMSGUARD_DAILY_BUGDET": "5"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"PRICES": "GB=0.04"}, "SMSGUARD_PRICES has no effect without SMSGUARD_DAILY_BUDGET or"),
        ({"DEFAULT_PRICE": "0.1"}, "SMSGUARD_DEFAULT_PRICE has no effect without SMSGUARD_DAILY_BUDGET"),
        ({"BUDGET_ALARM": "0.5", "RECOMMENDED": True}, "SMSGUARD_BUDGET_ALARM has no effect without"),
        ({"LEARN_UNTIL": "2026-01-01"}, "SMSGUARD_LEARN_UNTIL has no effect without SMSGUARD_RECOMMENDED"),
        (
            {"UNVERIFIED_CHALLENGE": False, "LEARN_UNTIL": "2026-01-01"},
            "SMSGUARD_LEARN_UNTIL, SMSGUARD_UNVERIFIED_CHALLENGE have no effect without SMSGUARD_RECOMMENDED",
        ),
    ],
)
def test_a_key_that_does_nothing_alone_is_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        built(COUNTRIES="GB", **settings)


def test_those_keys_wait_while_their_policy_is_off() -> None:
    """A 0 budget or RECOMMENDED=False turns the policy off on purpose: its details may stay."""
    off = {"DAILY_BUDGET": 0, "PRICES": "GB=0.04", "RECOMMENDED": False, "LEARN_UNTIL": "2026-01-01"}
    guard = built(COUNTRIES="GB", **off)
    assert not any(isinstance(p, SpendCap | LearnedCap) for p in guard.policies)
    guard = built(COUNTRIES="GB", DAILY_MESSAGES=100, PRICES="GB=0.04")
    assert any(isinstance(p, SpendCap) for p in guard.policies)


# -- no country list: said once, loudly -------------------------------------------------------


def test_without_countries_it_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "smsguard"), pytest.warns(AnyCountry, match="any country") as said:
        guard = built()
    # Only ours: the block records every warning of the process meanwhile, such as a
    # ResourceWarning from an earlier test's object that the garbage collector finalizes here.
    assert [w.category for w in said if issubclass(w.category, AnyCountry)] == [AnyCountry]
    assert [r.levelno for r in caplog.records if "any country" in r.getMessage()] == [logging.WARNING]
    assert attempt(guard, "+12015550123").allowed, "and it does text any country"


def test_with_countries_it_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "smsguard"), warnings.catch_warnings():
        warnings.simplefilter("error", AnyCountry)
        built(COUNTRIES="GB")
    assert not [r for r in caplog.records if "any country" in r.getMessage()]


def test_django_dict_takes_the_same_keys() -> None:
    values = {"SECRET": SECRET, "COUNTRIES": ["GB", "FR"], "DAILY_BUDGET": 50, "RECOMMENDED": True}
    guard = Guard.from_settings(values, prefix="")
    assert shape(guard) == shape(Guard(recommended(SERVED, daily_budget=50.0), secret=SECRET))
    with pytest.raises(ConfigError, match=r"SMSGUARD\['COUNTRIES'\]"):
        Guard.from_settings({"COUNTRIES": "Atlantis"}, prefix="")


# -- the same decisions as code, on the same traffic ------------------------------------------

NUMBERS = [
    *(f"+4474001234{i:02d}" for i in range(12)),  # GB mobiles, one range
    *(f"+336123456{i:02d}" for i in range(6)),  # FR mobiles
    "+12015550123",  # US: not served
    "+4915123456789",  # DE: not served
    "+449098790000",  # GB premium rate
    "+442079460123",  # GB landline
]
IPS = ["198.51.100.7", "198.51.100.8", "203.0.113.50"]


def traffic(seed: int, n: int) -> list[tuple[str, str, float]]:
    """(number, client address, seconds since the previous attempt): bursts and pauses."""
    rng = random.Random(seed)
    return [
        (rng.choice(NUMBERS), rng.choice(IPS), rng.choice([0, 1, 5, 20, 61, 400, 4000])) for _ in range(n)
    ]


def answers(send: Any, clock: Clock, seed: int, n: int) -> list[tuple[int, str | None]]:
    found = []
    for phone, ip, pause in traffic(seed, n):
        clock.advance(pause)
        status, body = send(phone, ip)
        found.append((status, body.get("reason") if status != 200 else None))
    return found


def flask_app(config: dict[str, Any], guard: Guard | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update({"SMSGUARD_SECRET": SECRET, **config})
    sms = SMSGuard(app, guard=guard)

    @app.post("/sms/send")
    @sms.protect()
    def send() -> Any:
        return jsonify(sent=True)

    return app


def flask_send(app: Flask) -> Any:
    client = app.test_client()

    def send(phone: str, ip: str) -> tuple[int, dict[str, Any]]:
        response = client.post("/sms/send", json={"phone": phone}, environ_base={"REMOTE_ADDR": ip})
        return response.status_code, response.get_json()

    return send


def django_send() -> Any:
    client = Client()

    def send(phone: str, ip: str) -> tuple[int, dict[str, Any]]:
        response = client.post(
            "/sms/send", json.dumps({"phone": phone}), content_type="application/json", REMOTE_ADDR=ip
        )
        return response.status_code, json.loads(response.content)

    return send


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flask_and_django_from_settings_decide_as_recommended_in_code(seed: int) -> None:
    n, budget = 160, 0.3  # 7 GB codes, or 4 FR ones: it runs out within the traffic
    start = 1_767_614_400.0

    def in_code() -> Guard:
        return Guard(recommended(SERVED, daily_budget=budget), secret=SECRET)

    # Flask: from app.config alone, against the same set built in code.
    settings = {
        "SMSGUARD_COUNTRIES": "GB,FR",
        "SMSGUARD_DAILY_BUDGET": str(budget),
        "SMSGUARD_RECOMMENDED": "true",
    }
    from_settings = flask_app(settings)
    coded = flask_app({}, guard=in_code())
    runs = {}
    for name, app in (("flask settings", from_settings), ("flask code", coded)):
        clock = Clock(start)
        app.extensions["smsguard"].guard.clock = clock
        runs[name] = answers(flask_send(app), clock, seed, n)

    # Django: from the SMSGUARD dict alone, against GUARD naming the set built in code.
    dict_settings = {"SECRET": SECRET, "COUNTRIES": SERVED, "DAILY_BUDGET": budget, "RECOMMENDED": True}
    for name, smsguard in (("django settings", dict_settings), ("django code", {"GUARD": in_code()})):
        with override_settings(SMSGUARD={**smsguard, "ROUTES": ["POST /sms/send"]}):
            clock = Clock(start)
            django_guard().clock = clock
            runs[name] = answers(django_send(), clock, seed, n)
    configured.clear(setting="SMSGUARD")

    expected = runs["flask code"]
    assert all(found == expected for found in runs.values()), {k: v[:20] for k, v in runs.items()}
    # The traffic reaches the defences: each of these refused at least once, and some allowed.
    reasons = {reason for status, reason in expected if reason}
    assert {"country_not_allowed", "number_type", "budget"} <= reasons, reasons
    assert reasons & {"challenge_required", "refused"} or seed != 1, reasons
    assert sum(status == 200 for status, _ in expected) >= 5
