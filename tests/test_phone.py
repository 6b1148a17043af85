from __future__ import annotations

import hashlib
import os
import warnings

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat

from smsguard import ConfigError, InvalidPhone, normalize
from smsguard.phone import NUMBER_TYPES, PARSER, Digest, Parser, canonical, check_region

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
        ("+86 138 0013 8000", "+8613800138000"),  # spaces and dashes alone: the cheap way
        (" 138-0013-8000 ", "13800138000"),
        ("+86 138 0013.8000", "+8613800138000"),  # then the others too
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


# The fast parser (rphonenumbers, the `fast` extra) against phonenumbers, over a generated set:
# every region's example number of every type, spelled as people type them, read with and
# without a region, plus numbers made invalid and the odd spellings above.
def _spellings(example: phonenumbers.PhoneNumber) -> list[str]:
    e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    international = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
    full_width = str.maketrans({str(d): chr(0xFF10 + d) for d in range(10)} | {"+": "\uff0b"})
    return [
        e164,
        international,
        national,
        "00" + e164[1:],  # the IDD most of the world dials
        phonenumbers.format_out_of_country_calling_number(example, "US"),  # 011 ...
        e164[1:],  # the + forgotten
        international.replace(" ", "-"),
        national.replace(" ", "."),
        f"({national[:3]}) {national[3:]}",
        international.translate(full_width),
        f"{international} ext. 12",
        f"{e164};ext=7",
        e164[:-2],  # too short
        e164 + "42",  # too long
        national[:-1] + "x",  # a letter
        f" {national} ",
    ]


def _generated() -> list[tuple[str, str | None]]:
    cases: list[tuple[str, str | None]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        examples = [phonenumbers.example_number_for_type(region, kind) for kind in NUMBER_TYPES]
        examples.append(phonenumbers.invalid_example_number(region))
        for example in filter(None, examples):
            for raw in _spellings(example):
                cases += [(raw, region), (raw, None), (raw, "CN")]
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:  # +800, +881...: no country
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            cases += [(raw, None) for raw in _spellings(example)]
    odd = [
        *SAME_NUMBER,
        "(201) 555-0123",
        "011 86 138 0013 8000",
        "1-800-FLOWERS",
        "+1 800 FLOWERS",
        "١٣٨٠٠١٣٨٠٠٠",
    ]
    odd += ["1234", "12345", "hello", "+999 1234 5678", "+86 100 0000 0000", "", "+", "++8613800138000"]
    cases += [(raw, region) for raw in odd for region in ("CN", "US", None)]
    return cases


def _outcome(parser: Parser, raw: str, region: str | None) -> tuple[object, ...]:
    try:
        number = parser.identify(raw, region, details=True)
    except InvalidPhone as exc:
        return ("invalid", str(exc))
    return tuple(number)


def test_fast_parser_agrees_with_phonenumbers() -> None:
    rphonenumbers = pytest.importorskip("rphonenumbers")
    slow, fast = Parser(phonenumbers), Parser(rphonenumbers)
    cases = _generated()
    assert len(cases) > 50_000  # every region, every type, every spelling
    differ = [
        (raw, region, a, b)
        for raw, region in cases
        if (a := _outcome(slow, raw, region)) != (b := _outcome(fast, raw, region))
    ]
    if rphonenumbers.__phonenumbers_version__ == phonenumbers.__version__:
        assert differ == []
    else:
        # Built from another libphonenumber release: the two may differ on the ranges that
        # release changed, and on nothing else. Shown, and bounded.
        if differ:
            shown = "\n".join(f"{raw!r} ({region}): {a} / {b}" for raw, region, a, b in differ[:20])
            warnings.warn(
                f"rphonenumbers (metadata {rphonenumbers.__phonenumbers_version__}) and phonenumbers "
                f"{phonenumbers.__version__} differ on {len(differ)} of {len(cases)} inputs:\n{shown}",
                stacklevel=1,
            )
        assert len(differ) <= len(cases) // 1000


def test_one_parser_chosen_at_import() -> None:
    try:
        import rphonenumbers  # noqa: F401
    except ImportError:
        assert PARSER.name == "phonenumbers"
    else:
        assert PARSER.name == (
            "phonenumbers" if os.environ.get("SMSGUARD_PARSER") == "phonenumbers" else "rphonenumbers"
        )


@pytest.mark.parametrize("lib", ["phonenumbers", "rphonenumbers"])
def test_one_number_one_key_whichever_parser(lib: str) -> None:
    parser = Parser(pytest.importorskip(lib))
    digest = Digest("s")
    keys = {parser.identify(raw, "CN", digest=digest.hash).phone_id for raw in SAME_NUMBER}
    assert keys == {digest.hash("+8613800138000")}  # one key, a keyed hash of the E.164 form
    assert "13800138000" not in next(iter(keys))
    with pytest.raises(InvalidPhone, match="too short"):
        parser.identify("1234", "CN")
