"""The ``smsguard`` command (also ``python -m smsguard``, and ``flask smsguard`` in a Flask app
with the extension): look at and steer a guard from a shell.

The guard is built from the same settings as ``Guard.from_settings``: ``SMSGUARD_*`` environment
variables, over the keys of a TOML file given with ``--config`` (top level or a ``[smsguard]``
table, in lower case without the prefix: ``storage_uri = "redis://..."``).

Exit codes: 0 done; 1 the backend could not be reached, or a check failed; 2 a bad command,
setting or number; 3 the daily report found anomalies.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from smsguard import stats as stats_
from smsguard.errors import BackendUnavailable, ConfigError, InvalidInput
from smsguard.guard import Guard
from smsguard.stats import Day

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

T = TypeVar("T")
PREFIX = "SMSGUARD_"
ANOMALIES = 3
"""The exit code of a ``report`` that flags anomalies."""


def load_settings(config: Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings: a TOML file's keys (as ``SMSGUARD_*``), then the environment over them."""
    settings: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {config}: {exc}") from None
        table = data.get("smsguard", data)
        if not isinstance(table, dict):
            raise ConfigError(f"--config {config}: [smsguard] must be a table")
        settings.update({PREFIX + str(name).upper(): value for name, value in table.items()})
    settings.update({name: value for name, value in environ.items() if name.startswith(PREFIX)})
    return settings


class Context:
    """What every command needs: the guard (built once, on first use) and the output form."""

    def __init__(self, build: Callable[[], Guard], as_json: bool) -> None:
        self._build, self.as_json = build, as_json
        self._guard: Guard | None = None

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = self._build()
        return self._guard

    def run(self, action: Callable[[], T]) -> T:
        """``action()``, with smsguard's errors turned into a message and an exit code."""
        try:
            return action()
        except BackendUnavailable as exc:
            raise Unreachable(f"the backend cannot be reached: {exc}") from None
        except (ConfigError, InvalidInput) as exc:
            raise BadInput(str(exc)) from None

    def say(self, data: Any, text: str) -> None:
        click.echo(json.dumps(data, indent=2) if self.as_json else text)


class Unreachable(click.ClickException):
    exit_code = 1


class BadInput(click.ClickException):
    exit_code = 2


def commands(build: Callable[[Path | None], Guard], *, config: bool = True) -> click.Group:
    """The command group, around ``build`` (how a guard is made, given ``--config`` if any)."""

    @click.group(name="smsguard", help=__doc__.split("\n\n")[0] if __doc__ else None)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
    @click.pass_context
    def group(ctx: click.Context, as_json: bool, config: str | None = None) -> None:
        ctx.obj = Context(lambda: build(Path(config) if config else None), as_json)

    if config:
        option = click.option("--config", type=click.Path(dir_okay=False), help="A TOML file of settings.")
        group = option(group)

    @group.command()
    @click.argument("phone")
    @click.option("--content", help="Also the counters of this content.")
    @click.option("--ip", help="Also the counters of this client IP.")
    @click.pass_obj
    def status(obj: Context, phone: str, content: str | None, ip: str | None) -> None:
        """One number's counters: used, limit, remaining, when a full one frees."""
        usage = obj.run(lambda: obj.guard.status(phone, content=content, ip=ip))
        phone_hash = obj.run(lambda: obj.guard.identify(phone))[1]
        rows = [u._asdict() for u in usage]
        lines = [f"{'policy':<16}{'used':>6}{'limit':>7}{'left':>6}  frees in"]
        for u in usage:
            frees = "-" if u.frees_in is None else f"{u.frees_in:,.0f} s"
            lines.append(f"{u.policy:<16}{u.used:>6}{u.limit:>7}{u.remaining:>6}  {frees}")
        obj.say({"phone_hash": phone_hash, "counters": rows}, "\n".join(lines))

    @group.command()
    @click.argument("phone")
    @click.pass_obj
    def reset(obj: Context, phone: str) -> None:
        """Forget one number's counters (its list entries stay)."""
        obj.run(lambda: obj.guard.reset(phone))
        obj.say({"reset": True}, "reset: its counters are forgotten")

    @group.command()
    @click.pass_obj
    def suspend(obj: Context) -> None:
        """Turn the emergency switch on: every worker stops sending."""
        obj.run(obj.guard.suspend)
        obj.say({"suspended": True}, "suspended: sending is off")

    @group.command()
    @click.pass_obj
    def resume(obj: Context) -> None:
        """Turn the emergency switch off."""
        obj.run(obj.guard.resume)
        obj.say({"suspended": False}, "resumed: sending is on")

    @group.group(name="list")
    def lists() -> None:
        """Change a shared Whitelist or Blacklist."""

    def list_command(verb: str, on: bool, summary: str) -> None:
        @lists.command(name=verb, help=summary)
        @click.argument("name")
        @click.argument("phone")
        @click.pass_obj
        def change(obj: Context, name: str, phone: str) -> None:
            write = obj.guard.add_number if on else obj.guard.remove_number
            obj.run(lambda: write(name, phone))
            obj.say({"list": name, "on": on}, f"{'added to' if on else 'removed from'} {name}")

    list_command("add", True, "Add PHONE to the shared list NAME (whitelist, blacklist).")
    list_command("remove", False, "Take PHONE out of the shared list NAME.")

    day_option = click.option("--day", metavar="YYYY-MM-DD", help="A day other than today.")

    @group.command()
    @day_option
    @click.option(
        "--by",
        type=click.Choice(["reason", "country", "hour"]),
        default="reason",
        show_default=True,
        help="How to break the day down.",
    )
    @click.pass_obj
    def stats(obj: Context, day: str | None, by: str) -> None:
        """One day's statistics, in the statistics' time zone."""
        found = obj.run(lambda: obj.guard.stats(day))
        lines = [f"{found.day} ({obj.guard.statistics.tz if obj.guard.statistics else ''})", _totals(found)]
        if by == "hour":
            lines.append(f"{'hour':<6}{'attempts':>9}{'allowed':>9}{'denied':>8}{'refunded':>10}")
            for h, counts in sorted(found.hours.items()):
                denied = sum(n for name, n in counts.items() if name.startswith(stats_.DENIED))
                lines.append(
                    f"{h:02d}:00 {counts.get(stats_.ATTEMPTS, 0):>9}{counts.get(stats_.ALLOWED, 0):>9}"
                    f"{denied:>8}{counts.get(stats_.REFUNDED, 0):>10}"
                )
        else:
            rows = found.denied if by == "reason" else found.countries
            lines.append(f"{'denied by' if by == 'reason' else 'country':<24}{'attempts':>9}")
            lines += (f"{name:<24}{n:>9}" for name, n in rows.items())
        if found.shadowed:
            lines.append("shadow policies would have denied: " + _pairs(found.shadowed))
        obj.say(found.as_dict(), "\n".join(lines))

    @group.command()
    @day_option
    @click.pass_obj
    def report(obj: Context, day: str | None) -> None:
        """The daily review: the day against the day before and a week before, the top reasons
        and countries, and anomalies (then the exit code is 3, for a cron job to alert on)."""
        found = obj.run(lambda: obj.guard.report(day))
        days = (found.day, found.previous, found.week_before)
        lines = [
            f"Daily review of {found.day.day}",
            f"{'':<12}{found.day.day.isoformat():>12}{found.previous.day.isoformat():>12}"
            f"{found.week_before.day.isoformat():>12}",
        ]
        for name in ("attempts", "allowed", "refunded", "verified"):
            lines.append(f"{name:<12}" + "".join(f"{getattr(d, name):>12,}" for d in days))
        lines.append(f"{'denied':<12}" + "".join(f"{sum(d.denied.values()):>12,}" for d in days))
        conversion = found.conversion
        lines.append(
            f"conversion: {'-' if conversion is None else f'{conversion:.1%}'} (verified per code sent)"
        )
        lines.append("top denial reasons: " + (_pairs(dict(list(found.day.denied.items())[:5])) or "-"))
        lines.append("top countries: " + (_pairs(dict(list(found.day.countries.items())[:5])) or "-"))
        if found.day.shadowed:
            lines.append("shadow policies would have denied: " + _pairs(found.day.shadowed))
        anomalies = found.anomalies
        lines.append("anomalies: " + ("none" if not anomalies else ""))
        lines += (f"  {line}" for line in anomalies)
        obj.say(found.as_dict(), "\n".join(lines))
        if anomalies:
            raise click.exceptions.Exit(ANOMALIES)

    @group.command()
    @click.pass_obj
    def check(obj: Context) -> None:
        """Is the backend safe to run on: it answers, the script is loaded, Redis does not
        evict, and the app's clock agrees with Redis's."""
        guard = obj.run(lambda: obj.guard)
        diagnose = getattr(guard.backend, "diagnose", None)
        if diagnose is None:
            found = [("backend", True, f"{type(guard.backend).__name__}: in process, nothing to check")]
        else:
            found = diagnose(time.time())
        obj.say(
            [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in found],
            "\n".join(f"{'ok ' if ok else 'BAD'} {name}: {detail}" for name, ok, detail in found),
        )
        if not all(ok for _, ok, _ in found):
            raise click.exceptions.Exit(1)

    return group


def _totals(day: Day) -> str:
    return (
        f"attempts {day.attempts:,}  allowed {day.allowed:,}  denied {sum(day.denied.values()):,}  "
        f"refunded {day.refunded:,}  verified {day.verified:,}"
    )


def _pairs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items())


def _from_environment(config: Path | None) -> Guard:
    try:
        return Guard.from_settings(load_settings(config, os.environ))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


main = commands(_from_environment)


if __name__ == "__main__":  # pragma: no cover
    main()
