"""The daily review as one self-contained HTML page: what ``smsguard report --html FILE`` writes
and what each adapter's review view serves (behind the app's own authentication).

    from smsguard.review import review_html
    page = review_html(guard)            # today; review_html(guard, "2026-11-26") for a day

The page reads what ``guard.report(day)`` reads (the statistics of the day, the day before and
the same weekday a week before) and shows, per hour, attempts, codes sent and codes entered
against the day before; conversion (codes entered per code sent) per country and per network;
the day's anomalies (``Report.anomalies``) and the surges and conversion drops the guard's own
``LearnedCap``s refused; and the spend against the budget of the guard's ``SpendCap``. Spend is
worked out as ``SpendCap`` counts it: each code let through, at its country's price.

The page needs nothing but itself: inline CSS and SVG, no script, no font, no image to fetch,
and a Content-Security-Policy that forbids fetching any. Nothing on it names a number or a
client: the statistics hold counts only.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Final

from smsguard import stats
from smsguard.errors import BackendError, BackendUnavailable, ConfigError
from smsguard.phone import NO_COUNTRY
from smsguard.pumping import DEFAULT_PRICES, UNITS, SpendCap
from smsguard.stats import Day, Report

if TYPE_CHECKING:
    from smsguard.guard import Guard

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""The page's Content-Security-Policy (also sent by the views): it may fetch nothing."""
TOP: Final = 15
"""Rows shown per table of scopes (countries, networks)."""

TODAY_COLOUR: Final = "#2563eb"
BEFORE_COLOUR: Final = "#b8c2cf"


@dataclass(frozen=True)
class Budget:
    """What codes cost and what a day may spend: a ``SpendCap``'s, or smsguard's indicative
    list prices with no cap (``dollars`` and ``messages`` None)."""

    dollars: float | None
    messages: int | None
    prices: Mapping[str, float]
    """Dollars per SMS, by ISO region."""
    default_price: float
    name: str | None = None
    """The SpendCap's name; None when the guard has none."""

    @classmethod
    def of(cls, guard: Guard) -> Budget:
        """The budget of ``guard``'s SpendCap, or no cap at the indicative prices."""
        cap = next((p for p in guard.policies if isinstance(p, SpendCap)), None)
        if cap is None:
            return INDICATIVE
        prices = {region: units / UNITS for region, units in cap.prices.items()}
        return cls(cap.daily_budget, cap.daily_messages, prices, cap.default_price / UNITS, cap.name)

    def price(self, region: str) -> float:
        return self.prices.get(region, self.default_price)

    def spend(self, counts: Mapping[str, int]) -> float:
        """Dollars spent on the codes ``counts`` (an hour's or a day's fields) let through."""
        return sum(n * self.price(region) for region, n in sent_to(counts).items())


INDICATIVE: Final = Budget(None, None, DEFAULT_PRICES, 0.05)
"""No budget, at smsguard's indicative list prices (and SpendCap's default price)."""


def sent_to(counts: Mapping[str, int]) -> dict[str, int]:
    """Codes let through per country (not per network) in ``counts``."""
    return {
        name[len(stats.SENT_TO) :]: n
        for name, n in counts.items()
        if name.startswith(stats.SENT_TO) and " " not in name  # "sent:GB Vodafone": a network
    }


@dataclass(frozen=True)
class Scope:
    """One country's or network's codes: sent and entered that day, and the day before's
    conversion (None where it sent none)."""

    name: str
    sent: int
    entered: int
    before: float | None

    @property
    def conversion(self) -> float:
        return self.entered / self.sent


def scopes(report: Report) -> tuple[list[Scope], list[Scope]]:
    """Conversion per country and per network (``"GB Vodafone"``), most codes sent first: the
    scopes of ``Day.conversions``, with their counts."""
    day, before = report.day, report.previous.conversions
    sent = {k[len(stats.SENT_TO) :]: n for k, n in day.totals.items() if k.startswith(stats.SENT_TO)}
    entered = day.totals
    countries: list[Scope] = []
    networks: list[Scope] = []
    for name in day.conversions:
        found = Scope(name, sent[name], entered.get(stats.VERIFIED_IN + name, 0), before.get(name))
        (networks if " " in name else countries).append(found)
    return countries, networks


def render_html(
    report: Report, *, budget: Budget | None = None, zone: str = "UTC", read_at: datetime | None = None
) -> str:
    """The page of ``report``. ``budget``: prices and caps for the spend (default: no cap, at the
    indicative prices); ``zone``: the statistics' time zone, as the page names it; ``read_at``:
    when the statistics were read (said on the page, as today's are a day under way)."""
    budget = budget or INDICATIVE
    day, previous = report.day, report.previous
    title = f"smsguard daily review: {day.day.isoformat()}"
    when = f"; read at {read_at:%Y-%m-%d %H:%M}" if read_at is not None else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Local hours in {_e(zone)}, against {previous.day.isoformat()} (the day '
        f"before) and {report.week_before.day.isoformat()} (a week before){_e(when)}.</p>",
        _anomalies(report),
        _totals(report),
        _hours(day, previous),
        _spend(day, previous, budget),
        _conversions(report),
        _denials(day),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def review_html(guard: Guard, day: date | str | None = None) -> str:
    """The page of ``guard``'s review of ``day`` (None: today). Raises what ``guard.report``
    raises: ConfigError for a bad day or no statistics, BackendUnavailable."""
    return render_page(guard, guard.report(day))


async def areview_html(guard: Guard, day: date | str | None = None) -> str:
    """``review_html`` for async code."""
    return render_page(guard, await guard.areport(day))


def render_page(guard: Guard, report: Report) -> str:
    """The page of ``report``, read from ``guard``: its SpendCap's budget, its statistics' time
    zone, and its clock for when it was read."""
    statistics = guard.statistics
    zone = statistics.tz if statistics is not None else None
    read_at = datetime.fromtimestamp(guard.clock(), zone)
    return render_html(report, budget=Budget.of(guard), zone=str(zone or "UTC"), read_at=read_at)


# -- serving it --------------------------------------------------------------------------------

HEADERS: Final = (("Content-Security-Policy", CSP), ("Cache-Control", "no-store"))
"""What a view sends with the page (beside its HTML content type)."""


@dataclass(frozen=True)
class Served:
    """A view's answer: its status and body (the page, or a line of plain text saying what
    went wrong), and its content type."""

    status: int
    body: str
    content_type: str = "text/html; charset=utf-8"


def day_asked(query: Mapping[str, str]) -> date | None:
    """The day a request asks for (``?day=YYYY-MM-DD``); None for today. ConfigError if bad."""
    day = query.get("day")
    if not day:
        return None
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise ConfigError(f"day={day!r} is not a day: use YYYY-MM-DD") from None


def serve(guard: Guard, query: Mapping[str, str]) -> Served:
    """What a review view answers to a request with ``query``: the page (200), a bad day (400),
    or the backend unreachable or no statistics kept (503)."""
    try:
        return Served(200, review_html(guard, day_asked(query)))
    except (ConfigError, BackendError, BackendUnavailable) as exc:
        return _failed(guard, exc)


async def aserve(guard: Guard, query: Mapping[str, str]) -> Served:
    """``serve`` for async code."""
    try:
        return Served(200, await areview_html(guard, day_asked(query)))
    except (ConfigError, BackendError, BackendUnavailable) as exc:
        return _failed(guard, exc)


def _failed(guard: Guard, exc: Exception) -> Served:
    status = 400 if isinstance(exc, ConfigError) and guard.statistics is not None else 503
    return Served(status, f"smsguard review: {exc}\n", "text/plain; charset=utf-8")


# -- the page's parts --------------------------------------------------------------------------

STYLE: Final = f"""
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
  margin: 1.5em auto; max-width: 880px; padding: 0 1em; }}
h1 {{ font-size: 1.5em; margin-bottom: .2em; }}
h2 {{ font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #d9dee5; }}
h3 {{ font-size: 1em; margin: 1em 0 .2em; }}
.meta, .note {{ color: #52606d; }}
table {{ border-collapse: collapse; margin: .4em 0; }}
th, td {{ padding: .15em .6em; text-align: right; border-bottom: 1px solid #eef1f4; }}
th:first-child, td:first-child {{ text-align: left; }}
.anomalies {{ border-left: 4px solid #d64545; background: #fdf0f0; padding: .4em 1em; }}
.calm {{ border-left: 4px solid #3e9a5c; background: #eef8f1; padding: .4em 1em; }}
.bar {{ background: #edf0f3; width: 220px; height: .8em; display: inline-block; }}
.bar > span {{ background: {TODAY_COLOUR}; height: 100%; display: block; }}
.bar.over > span {{ background: #d64545; }}
.key i {{ display: inline-block; width: .9em; height: .9em; vertical-align: -.1em; }}
svg {{ display: block; }}
svg text {{ font-size: 10px; fill: #52606d; }}
details {{ margin: .5em 0; }}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _n(n: float) -> str:
    return f"{n:,.0f}"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    lines = [f"<table{klass}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>"]
    lines.append("<tbody>")
    lines += ("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _anomalies(report: Report) -> str:
    found = report.anomalies
    if not found:
        return '<section id="anomalies" class="calm"><h2>Anomalies</h2><p>None.</p></section>'
    items = "".join(f"<li>{_e(line)}</li>" for line in found)
    return f'<section id="anomalies" class="anomalies"><h2>Anomalies</h2><ul>{items}</ul></section>'


def _totals(report: Report) -> str:
    days = (report.day, report.previous, report.week_before)

    def row(label: str, values: Iterable[object]) -> list[object]:
        return [_e(label), *values]

    rows = [
        row("attempts", (_n(d.attempts) for d in days)),
        row("codes sent (allowed less refunded)", (_n(_sent(d.totals)) for d in days)),
        row("codes entered (verified)", (_n(d.verified) for d in days)),
        row("denied", (_n(sum(d.denied.values())) for d in days)),
        row("conversion", (_rate(d.conversion) for d in days)),
    ]
    head = ["", *(d.day.isoformat() for d in days)]
    return '<section id="totals"><h2>The day</h2>' + _table(head, rows) + "</section>"


def _sent(counts: Mapping[str, int]) -> int:
    return max(counts.get(stats.ALLOWED, 0) - counts.get(stats.REFUNDED, 0), 0)


def _hours(day: Day, previous: Day) -> str:
    series = (
        ("attempts", "Attempts", lambda c: c.get(stats.ATTEMPTS, 0)),
        ("sent", "Codes sent", _sent),
        ("entered", "Codes entered", lambda c: c.get(stats.VERIFIED, 0)),
    )
    key = (
        f'<p class="key"><i style="background:{TODAY_COLOUR}"></i> {day.day.isoformat()} &nbsp; '
        f'<i style="background:{BEFORE_COLOUR}"></i> {previous.day.isoformat()} (the day before)</p>'
    )
    parts = ['<section id="hours"><h2>Per hour, against the day before</h2>', key]
    table_rows = []
    values = {}
    for ident, label, count in series:
        now = [count(day.hour(h)) for h in range(24)]
        then = [count(previous.hour(h)) for h in range(24)]
        values[ident] = (now, then)
        parts.append(f"<h3>{label}</h3>")
        parts.append(_chart(ident, now, then))
    for h in range(24):
        cells: list[object] = [f"{h:02d}:00"]
        for ident, _, _ in series:
            now, then = values[ident]
            cells += [_n(now[h]), _n(then[h])]
        table_rows.append(cells)
    head = ["hour"]
    for _, label, _ in series:
        head += [f"{label.lower()}", "day before"]
    parts.append("<details><summary>The numbers</summary>")
    parts.append(_table(head, table_rows, "hours"))
    parts.append("</details></section>")
    return "\n".join(parts)


def _chart(ident: str, now: Sequence[int], then: Sequence[int]) -> str:
    """24 pairs of bars: the day's hour beside the day before's, on one scale."""
    width, height, left, bottom, slot = 760, 130, 44, 16, 29
    top = max([*now, *then, 1])
    scale = (height - bottom - 8) / top
    parts = [
        f'<svg id="chart-{ident}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{ident} per hour">',
        f'<text x="{left - 4}" y="12" text-anchor="end">{_n(top)}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#9aa5b1"/>',
    ]
    for h in range(24):
        x = left + 2 + h * slot
        for offset, n, colour, which in (
            (0, now[h], TODAY_COLOUR, "day"),
            (13, then[h], BEFORE_COLOUR, "before"),
        ):
            tall = n * scale
            parts.append(
                f'<rect class="{which}" x="{x + offset}" y="{height - bottom - tall:.1f}" width="12" '
                f'height="{tall:.1f}" fill="{colour}"><title>{h:02d}:00 {which}: {n:,}</title></rect>'
            )
        if h % 3 == 0:
            parts.append(f'<text x="{x}" y="{height - 3}">{h:02d}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar(share: float) -> str:
    over = " over" if share > 1 else ""
    return f'<span class="bar{over}"><span style="width:{min(share, 1) * 100:.1f}%"></span></span>'


def _spend(day: Day, previous: Day, budget: Budget) -> str:
    spent, before = budget.spend(day.totals), budget.spend(previous.totals)
    sent, sent_before = day.allowed, previous.allowed
    rows: list[list[object]] = []
    if budget.dollars is not None:
        share = spent / budget.dollars
        rows.append(
            [
                "dollars",
                f"${spent:,.2f}",
                f"${budget.dollars:,.2f}",
                f"{share:.0%} {_bar(share)}",
                f"${before:,.2f}",
            ]
        )
    if budget.messages is not None:
        share = sent / budget.messages
        rows.append(
            [
                "codes let through",
                _n(sent),
                _n(budget.messages),
                f"{share:.0%} {_bar(share)}",
                _n(sent_before),
            ]
        )
    parts = ['<section id="spend"><h2>Spend against budget</h2>']
    if rows:
        parts.append(_table(["", "spent", "daily budget", "share", "the day before"], rows, "budget"))
        parts.append(
            f'<p class="note">As SpendCap {_e(budget.name)} counts it: each code let through at '
            "its country's price (a refund gives nothing back).</p>"
        )
    else:
        parts.append(
            f'<p class="note">No SpendCap, so no budget. At smsguard\'s indicative list prices the '
            f"day's codes cost about ${spent:,.2f} (the day before ${before:,.2f}); set "
            "<code>SMSGUARD_DAILY_BUDGET</code> (or a <code>SpendCap</code>) with your provider's "
            "prices.</p>"
        )
    by_country = sorted(
        sent_to(day.totals).items(), key=lambda item: (-item[1] * budget.price(item[0]), item[0])
    )
    if by_country:
        rows = [
            [_e(region), _n(n), f"${budget.price(region):,.4f}", f"${n * budget.price(region):,.2f}"]
            for region, n in by_country[:TOP]
        ]
        parts.append("<h3>By country</h3>")
        parts.append(_table(["country", "codes let through", "price", "spend"], rows, "spend-countries"))
    parts.append("</section>")
    return "\n".join(parts)


def _conversions(report: Report) -> str:
    countries, networks = scopes(report)
    parts = ['<section id="conversion"><h2>Conversion: codes entered per code sent</h2>']
    overall, before = report.day.conversion, report.previous.conversion
    parts.append(f"<p>The day: <strong>{_rate(overall)}</strong> (the day before {_rate(before)}).</p>")
    for ident, label, found in (
        ("countries", "Per country", countries),
        ("networks", "Per network", networks),
    ):
        parts.append(f"<h3>{label}</h3>")
        if not found:
            none = (
                "no code sent"
                if ident == "countries"
                else "no network known (a policy by network tells them)"
            )
            parts.append(f'<p class="note" id="no-{ident}">None: {none}.</p>')
            continue
        rows = [
            [
                _e(_label(s.name)),
                _n(s.sent),
                _n(s.entered),
                f"{s.conversion:.0%} {_bar(s.conversion)}",
                _rate(s.before),
            ]
            for s in found[:TOP]
        ]
        parts.append(
            _table([label[4:], "codes sent", "entered", "conversion", "the day before"], rows, ident)
        )
        if len(found) > TOP:
            parts.append(f'<p class="note">And {len(found) - TOP:,} more.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _label(scope: str) -> str:
    return "none (non-geographic)" if scope == NO_COUNTRY else scope


def _denials(day: Day) -> str:
    denied = day.denied
    if not denied and not day.shadowed:
        return ""
    parts = ['<section id="denials"><h2>Denied, by reason</h2>']
    if denied:
        parts.append(_table(["reason", "attempts"], ([_e(r), _n(n)] for r, n in denied.items()), "denied"))
    if day.shadowed:
        parts.append("<h3>Shadow policies would have denied</h3>")
        parts.append(_table(["policy", "attempts"], ([_e(p), _n(n)] for p, n in day.shadowed.items())))
    parts.append("</section>")
    return "\n".join(parts)
