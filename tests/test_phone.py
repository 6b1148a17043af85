from __future__ import annotations

import hashlib

import pytest

from smsguard import ConfigError, InvalidPhone, normalize
from smsguard.phone import Digest, canonical, check_region

SAME_NUMBER = [
    "+8613800138000",
    "+86 138-0013-8000",
    "+86 (138) 0013 8000",
    "008613800138000",
    "13800138000",
    "138 0013 8000",
    "138-0013-8000",
    "１３８００１３８０００",  # full-width digits
    "＋８６ １３８ ００１３ ８０００",
    " 13800138000 ",
]


@pytest.mark.parametrize("raw", SAME_NUMBER)
def test_format_variants_are_one_number(raw: str) -> None:
    assert normalize(raw, "CN") == "+8613800138000"


def test_region_reads_national_numbers() -> None:
    assert normalize("(201) 555-0123", "US") == "+12015550123"
    assert normalize("011 86 138 0013 8000", "US") == "+8613800138000"


@pytest.mark.parametrize(
    ("raw", "region", "why"),
    [
        ("1234", "CN", "too short"),
        ("12345", "CN", "a local number"),
        ("hello", "CN", "not a phone number"),
        ("13800138000", None, "no country code"),
        ("+86 138 0013 8000 0000 0000", "CN", "too long"),
        ("+999 1234 5678", None, "country code"),
        ("1" * 200, "CN", "longer than 64"),
        ("+86 100 0000 0000", "CN", "not a valid number"),
    ],
)
def test_invalid_numbers_say_why(raw: str, region: str | None, why: str) -> None:
    with pytest.raises(InvalidPhone, match=why):
        normalize(raw, region)


def test_invalid_message_names_value_and_region() -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize("1234", "CN")
    assert str(info.value) == "'1234' is not a valid number for region CN: too short"


def test_non_string_is_invalid() -> None:
    with pytest.raises(InvalidPhone, match="must be a string"):
        normalize(13800138000, "CN")  # type: ignore[arg-type]


def test_check_region() -> None:
    assert check_region("cn") == "CN"
    assert check_region(None) is None
    with pytest.raises(ConfigError, match="unknown region 'XX'"):
        check_region("XX")


def test_digest_is_keyed_and_stable() -> None:
    a, b = Digest("one secret"), Digest("another secret")
    assert a("+8613800138000") == Digest("one secret")("+8613800138000")
    assert a("+8613800138000") != b("+8613800138000")
    assert a("+8613800138000") != a("+8613800138001")
    assert "13800138000" not in a("+8613800138000")


def test_digest_is_keyed_blake2b_of_the_derived_key() -> None:
    # Pinned to its construction: keys already in Redis must survive an upgrade.
    key = hashlib.blake2b(b"s", digest_size=32, person=b"smsguard").digest()
    digest = Digest("s")
    for text in ["+8613800138000", "+8613800138000", "POST /sms/send", ""]:  # a hash leaves no trace
        assert digest.hash(text) == hashlib.blake2b(text.encode(), key=key, digest_size=12).hexdigest()


def test_digest_caches_short_texts_only() -> None:
    digest = Digest("s")
    long_text = "x" * 10_000
    assert digest(long_text) == digest.hash(long_text)
    assert digest("short") == digest.hash("short")
    assert digest._cached.cache_info().currsize == 1  # only "short" is kept


def test_digest_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGUARD_SECRET", "from-env")
    assert Digest.from_settings(None, shared=True)("x") == Digest("from-env")("x")


def test_shared_backend_without_secret_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSGUARD_SECRET", raising=False)
    with pytest.raises(ConfigError, match="SMSGUARD_SECRET"):
        Digest.from_settings(None, shared=True)
    # An in-process backend gets a random secret: keys never leave the process.
    assert Digest.from_settings(None, shared=False)("x") != Digest.from_settings(None, shared=False)("x")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("+86 138-0013-8000", "+8613800138000"),
        ("(138) 0013.8000", "13800138000"),
        ("＋８６　１３８００１３８０００", "+8613800138000"),
        ("+1 201 555 0123 ext. 4", "+1 201 555 0123 ext. 4"),  # not digits alone: left whole
        ("١٣٨٠٠١٣٨٠٠٠", "١٣٨٠٠١٣٨٠٠٠"),  # Arabic-Indic digits: phonenumbers reads them
        ("13800138000", "13800138000"),  # already canonical
        ("+8613800138000", "+8613800138000"),
        ("++8613800138000", "++8613800138000"),  # not '+' then digits: left whole
    ],
)
def test_canonical_cache_key(raw: str, key: str) -> None:
    assert canonical(raw) == key
    assert normalize(key, "CN" if "ext" not in raw else None) == normalize(
        raw, "CN" if "ext" not in raw else None
    )
