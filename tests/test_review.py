"""The daily review page: what it says (from the statistics the text review reads), that it
needs nothing but itself, and what headless Chromium shows of it: its DOM, and a screenshot's
pixels."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CHROMIUM, Clock
from review_traffic import MIDNIGHT, PUMPED, ZONE, two_days

from smsguard import DailyCap, Guard, MemoryBackend
from smsguard.cli import ANOMALIES, commands
from smsguard.review import BEFORE_COLOUR, CSP, TODAY_COLOUR, Budget, render_html, review_html
from smsguard.stats import Day, Report

RED, GREEN = (0xD6, 0x45, 0x45), (0x3E, 0x9A, 0x5C)  # the anomalies' border, and a calm day's


class Page(HTMLParser):
    """What a page holds, read as a browser's DOM gives it: each section's text, each table's
    rows (by its class), each chart's bars (by its id) and the list items of the anomalies."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.bars: dict[str, list[tuple[str, float, str]]] = {}  # chart -> (class, height, title)
        self.anomalies: list[str] = []
        self.title = ""
        self._section: str | None = None
        self._table: str | None = None
        self._chart: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._li: list[str] | None = None
        self._bar: list[object] | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._section is not None:  # each element's text apart from the last one's
            self.sections[self._section] += " "
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = ""
        elif tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li" and self._section == "anomalies":
            self._li = []
        elif tag == "svg":
            self._chart = a["id"]
            self.bars[self._chart] = []
        elif tag == "rect" and self._chart is not None:
            self._bar = [a["class"], float(a["height"]), ""]
        elif tag == "title" and self._bar is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "li" and self._li is not None:
            self.anomalies.append("".join(self._li))
            self._li = None
        elif tag == "rect" and self._bar is not None and self._chart is not None:
            self.bars[self._chart].append((str(self._bar[0]), float(self._bar[1]), str(self._bar[2])))  # type: ignore[arg-type]
            self._bar = None
        elif tag == "svg":
            self._chart = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._section is not None:
            self.sections[self._section] += data
        for part in (self._cell, self._li):
            if part is not None:
                part.append(data)
        if self._bar is not None:
            self._bar[2] = str(self._bar[2]) + data

    def rows(self, table: str) -> dict[str, list[str]]:
        """A table's body rows by their first cell."""
        return {row[0]: row[1:] for row in self.tables[table][1:]}


def chromium(*args: str, tmp: Path) -> str:
    """Headless Chromium's output for ``args`` (its own profile, no sandbox: the tests may run
    as root)."""
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium)"
    found = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return found.stdout


def pixels(png: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit RGB or RGBA PNG, as Chromium writes its screenshots."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data, header = 8, b"", b""
    while at < len(png):
        size, kind = struct.unpack(">I4s", png[at : at + 8])
        body = png[at + 8 : at + 8 + size]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
        at += 12 + size
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour in (2, 6), interlace) == (8, True, 0), "an 8-bit RGB(A) PNG"
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(data), width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(line)
        previous = line
    found = [tuple(row[x : x + 3]) for row in rows for x in range(0, stride, channels)]
    return width, height, found


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@pytest.fixture
def pumped(clock: Clock) -> Guard:
    return two_days(clock)[0]


def test_the_page_needs_nothing_but_itself(pumped: Guard) -> None:
    page = review_html(pumped)
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert CSP == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    for fetching in ("<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import", "//"):
        assert fetching not in page.lower(), f"{fetching!r}: the page would fetch something"


def test_the_page_says_what_the_text_review_says(pumped: Guard) -> None:
    """The anomalies, the conversions per country and network and the totals are those of
    ``guard.report()``, the text review's."""
    report = pumped.report()
    page = Page(review_html(pumped))
    assert page.title == "smsguard daily review: 2026-03-02"
    assert page.anomalies == report.anomalies
    assert "conversion drop refused by learned_country LV (1 time)" in page.anomalies
    assert "budget alarm of spend (1 time)" in page.anomalies
    shown = {**page.rows("countries"), **page.rows("networks")}
    assert set(shown) == set(report.day.conversions)
    for scope, rate in report.day.conversions.items():
        assert shown[scope][2].split()[0] == f"{rate:.0%}"
    totals = page.rows("")
    assert totals["attempts"] == [
        f"{d.attempts:,}" for d in (report.day, report.previous, report.week_before)
    ]


def test_spend_is_what_the_spend_cap_counted(pumped: Guard) -> None:
    """The page works spend out from the codes sent per country, at the SpendCap's prices: the
    same dollars as the SpendCap's own counter."""
    counted = next(u for u in pumped.status("+447400100900") if u.policy == "spend")
    budget = Budget.of(pumped)
    assert (budget.dollars, budget.name) == (3.5, "spend")
    assert budget.spend(pumped.stats().totals) == pytest.approx(counted.used)
    row = Page(review_html(pumped)).rows("budget")["dollars"]
    assert row[:2] == [f"${counted.used:,.2f}", "$3.50"]


def test_a_guard_without_a_budget_says_so(clock: Clock) -> None:
    guard = Guard([DailyCap(10)], clock=clock)
    guard.check("+447400123456")
    page = review_html(guard)
    assert "No SpendCap, so no budget" in Page(page).sections["spend"]
    assert Budget.of(guard).dollars is None


def test_what_the_page_shows_is_escaped() -> None:
    """Network names come from number data, not from us: shown as text, never as markup."""
    day = Day(date(2026, 3, 2), {9: {"attempts": 1, "allowed": 1, "sent:GB": 1, "sent:GB <b>Evil</b>": 1}})
    page = render_html(Report(day, day, day))
    assert "<b>Evil</b>" not in page
    assert Page(page).rows("networks")["GB <b>Evil</b>"][0] == "1"


def test_report_html_writes_the_page(pumped: Guard, tmp_path: Path) -> None:
    """``smsguard report --html FILE``: the text review as ever (exit 3: anomalies), and the page."""
    pumped.backend.shared = True  # type: ignore[misc]  # the command refuses an unshared one
    target = tmp_path / "review.html"
    result = CliRunner().invoke(commands(lambda _: pumped, config=False), ["report", "--html", str(target)])
    assert result.exit_code == ANOMALIES, result.output
    assert "conversion drop refused by learned_country LV (1 time)" in result.output
    assert f"the review page is in {target}" in result.stderr
    assert target.read_text(encoding="utf-8") == review_html(pumped)
    bad = CliRunner().invoke(commands(lambda _: pumped, config=False), ["report", "--html", str(tmp_path)])
    assert bad.exit_code == 2


@pytest.mark.chromium
def test_chromium_shows_the_day_against_the_day_before(pumped: Guard, tmp_path: Path) -> None:
    """Rendered by headless Chromium: the DOM it builds holds the per-hour numbers, the bars,
    the conversions, the anomalies and the spend; a screenshot shows the two days' bars and the
    anomalies' red border."""
    report = pumped.report()
    target = tmp_path / "review.html"
    target.write_text(review_html(pumped), encoding="utf-8")
    page = Page(chromium("--dump-dom", target.as_uri(), tmp=tmp_path))

    assert page.title == "smsguard daily review: 2026-03-02"
    assert page.anomalies == report.anomalies
    assert len(page.anomalies) == 5
    hours = page.rows("hours")
    assert len(hours) == 24
    # hour: attempts, the day before; codes sent, the day before; codes entered, the day before
    assert hours["09:00"] == ["13", "13", "13", "13", "11", "11"]
    sent = 20  # the Latvian codes the country room let through, of 60
    assert hours["14:00"] == [str(PUMPED), "0", str(sent), "0", "0", "0"]
    assert hours["03:00"] == ["0"] * 6
    attempts = page.bars["chart-attempts"]
    assert len(attempts) == 48, "24 hours, each the day and the day before"
    tallest = max(attempts, key=lambda bar: bar[1])
    assert (tallest[0], tallest[2]) == ("day", f"14:00 day: {PUMPED}")
    by_hour = {title: height for _, height, title in attempts}
    assert by_hour["09:00 day: 13"] == by_hour["09:00 before: 13"] > 0
    assert by_hour["14:00 before: 0"] == 0

    networks = {
        f"{country} {pumped.identify(phone).network}"
        for country, phone in (("GB", "+447400100900"), ("FR", "+33612300900"), ("LV", "+37120000001"))
    }
    assert set(page.rows("networks")) == networks
    countries = page.rows("countries")
    assert [countries[c][:2] for c in ("GB", "FR", "LV")] == [["30", "23"], ["9", "9"], [str(sent), "0"]]
    assert countries["LV"][2] == "0%"
    assert countries["GB"][2:] == ["77%", "77%"]
    assert page.rows("budget")["dollars"][1:3] == ["$3.50", "88%"]

    shot = tmp_path / "review.png"
    chromium(f"--screenshot={shot}", "--window-size=1000,2400", target.as_uri(), tmp=tmp_path)
    width, height, found = pixels(shot.read_bytes())
    assert (width, height) == (1000, 2400)
    colours = {c: found.count(c) for c in (rgb(TODAY_COLOUR), rgb(BEFORE_COLOUR), RED, GREEN)}
    assert colours[rgb(TODAY_COLOUR)] > 2000, "the day's bars show"
    assert colours[rgb(BEFORE_COLOUR)] > 1000, "the day before's bars show"
    assert colours[RED] > 100, "the anomalies' red border shows"
    assert colours[GREEN] == 0


@pytest.mark.chromium
def test_chromium_shows_a_calm_day_as_calm(clock: Clock, tmp_path: Path) -> None:
    guard = Guard([DailyCap(10)], clock=clock, backend=MemoryBackend())
    clock.now = MIDNIGHT + 9 * 3600
    assert guard.check("+447400123456").allowed
    target = tmp_path / "calm.html"
    target.write_text(review_html(guard), encoding="utf-8")
    page = Page(chromium("--dump-dom", target.as_uri(), tmp=tmp_path))
    assert page.anomalies == []
    assert re.sub(r"\s+", " ", page.sections["anomalies"]).strip() == "Anomalies None."
    assert "No SpendCap, so no budget" in page.sections["spend"]
    shot = tmp_path / "calm.png"
    chromium(f"--screenshot={shot}", "--window-size=1000,600", target.as_uri(), tmp=tmp_path)
    found = pixels(shot.read_bytes())[2]
    assert found.count(GREEN) > 100, "a calm day's green border shows"
    assert found.count(RED) == 0


def test_the_zone_is_named() -> None:
    assert ZONE in render_html(Report(*(Day(date(2026, 3, d), {}) for d in (2, 1, 1))), zone=ZONE)
