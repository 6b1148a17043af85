"""Look at and steer an app's guard from a shell: a number's counters, the emergency switch,
shared lists, statistics and the daily review. Also python -m smsguard, flask smsguard (in a
Flask app with the extension) and manage.py smsguard (Django).

The guard is built as Guard.from_settings builds the app's: from the SMSGUARD_* environment,
over the keys of a TOML file given with --config (top level or an [smsguard] table, lower case,
without the prefix: storage_uri = "redis://..."). Or --guard module:attribute names the app's
guard where the app builds it in code (Starlette, FastAPI). Its backend must be the app's shared
one, and its settings the app's: the app's guard leaves a fingerprint of them in the backend
with its first decision, and a command refuses settings that differ, saying what differs.

Exit codes: 0 done; 1 the backend could not be reached, or a check failed; 2 a bad command,
setting or number, or settings that are not the app's; 3 the daily report found anomalies.
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

from smsguard import checks, fingerprint, review
from smsguard import stats as stats_
from smsguard.attempt import Usage
from smsguard.errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from smsguard.guard import Guard
from smsguard.settings import imported
from smsguard.stats import Day

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

T = TypeVar("T")
PREFIX = "SMSGUARD_"
ANOMALIES = 3
"""The exit code of a ``report`` that flags anomalies."""
NOT_SHARED = (
    "an in-process backend (memory://) holds nothing of the app's: what this command read or "
    "changed would stay in its own process. "
)
"""Why a guard on memory:// is refused; each way of naming the guard then says what to change."""
USE_REDIS = {
    "settings": "Set SMSGUARD_STORAGE_URI to the app's Redis URL, or name the app's guard with "
    "--guard module:attribute",
    "guard": "The guard --guard names counts in process: build the app's guard on its Redis "
    "(SMSGUARD_STORAGE_URI, RedisBackend) for this command to reach it",
    "app": "The app's guard counts in process: set the app's SMSGUARD_STORAGE_URI (Django: "
    "SMSGUARD['STORAGE_URI'] or SMSGUARD['CACHE']) to its Redis for this command to reach it",
}
APP_HELP = "\n\n".join(
    [(__doc__ or "").split("\n\n")[0], "It works on the app's own guard.", (__doc__ or "").split("\n\n")[2]]
)
"""The help of ``flask smsguard`` and ``manage.py smsguard``: no --config, no --guard there."""


NO_FINGERPRINT = (
    "no fingerprint of the app's settings in this backend (the app's guard leaves one with its "
    "first decision): these settings cannot be checked against the app's"
)


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


def imported_guard(path: str, where: str) -> Guard:
    """The Guard ``path`` names (``"myapp.sms:guard"``, ``"myapp.sms.guard"``): a Guard, or a
    callable that returns one. A ConfigError naming ``where`` (a key, an option) otherwise."""
    found = imported(path, where, ": name it as module:attribute, as in myapp.sms:guard")
    made = found() if callable(found) and not isinstance(found, Guard) else found
    if not isinstance(made, Guard):
        raise ConfigError(f"{where} = {path!r} is not a Guard (nor a callable that returns one)")
    return made


class Context:
    """What every command needs: the guard (built once, on first use) and the output form."""

    def __init__(self, build: Callable[[], Guard], as_json: bool, named_by: str = "settings") -> None:
        self._build, self.as_json, self.named_by = build, as_json, named_by
        self._built: Guard | None = None
        self._checked = False

    @property
    def built(self) -> Guard:
        """The guard, as built."""
        if self._built is None:
            self._built = self._build()
        return self._built

    @property
    def guard(self) -> Guard:
        """The guard, once it is known to work on the app's state: a shared backend, and the
        app's settings (its fingerprint in that backend; said on stderr when there is none)."""
        guard = self.built
        if not self._checked:
            if not guard.backend.shared:
                raise ConfigError(NOT_SHARED + USE_REDIS[self.named_by])
            differ = agreement(guard)
            if differ is None:
                click.echo(f"smsguard: {NO_FINGERPRINT}", err=True)
            elif differ:
                raise ConfigError(
                    f"these settings are not the app's: {'; '.join(differ)}. Run with the app's "
                    "settings, or name its guard with --guard module:attribute"
                )
            self._checked = True
        return guard

    def run(self, action: Callable[[], T]) -> T:
        """``action()``, with smsguard's errors turned into a message and an exit code."""
        try:
            return action()
        except BackendUnavailable as exc:
            raise Unreachable(f"the backend cannot be reached: {exc}") from None
        except BackendError as exc:
            raise Unreachable(str(exc)) from None
        except (ConfigError, InvalidInput) as exc:
            raise BadInput(str(exc)) from None

    def say(self, data: Any, text: str) -> None:
        click.echo(json.dumps(data, indent=2) if self.as_json else text)


def agreement(guard: Guard) -> list[str] | None:
    """What differs between ``guard``'s settings and those of the app that uses its backend
    (empty: nothing), or None when the app left no fingerprint there. Reads the backend."""
    note: Callable[[str], str | None] | None = getattr(guard.backend, "note", None)
    found = None if note is None else note(fingerprint.KEY)
    return None if found is None else fingerprint.differences(found, guard.fingerprint)


class Unreachable(click.ClickException):
    exit_code = 1


class BadInput(click.ClickException):
    exit_code = 2


def _json_too(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Context).as_json = True  # type: ignore[union-attr]


json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_json_too, help="Print JSON, for scripts."
)


def commands(build: Callable[[Path | None], Guard], *, config: bool = True) -> click.Group:
    """The command group, around ``build`` (how a guard is made, given ``--config`` if any).
    ``config``: the standalone command, with ``--config`` and ``--guard``."""
    named_by = "settings" if config else "app"  # the app's own command (flask, manage.py) else
    about = __doc__ if config else APP_HELP

    @click.group(name="smsguard", help=about)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
    @click.pass_context
    def group(ctx: click.Context, as_json: bool, config: str | None = None, guard: str | None = None) -> None:
        if guard is not None and config is not None:
            raise BadInput("--guard names a guard built in code: it takes no --config")
        if guard is not None:
            ctx.obj = Context(lambda: _in_code(guard), as_json, "guard")
        else:
            ctx.obj = Context(lambda: build(Path(config) if config else None), as_json, named_by)

    if config:
        group = click.option("--config", type=click.Path(dir_okay=False), help="A TOML file of settings.")(
            group
        )
        group = click.option(
            "--guard",
            metavar="MODULE:ATTRIBUTE",
            help="The app's guard, where the app builds it in code: a Guard, or a callable that "
            "returns one (myapp.sms:guard, from the current directory).",
        )(group)

    @group.command()
    @click.argument("phone")
    @click.option("--content", help="Also the counters of this content.")
    @click.option("--ip", help="Also the counters of this client IP.")
    @json_option
    @click.pass_obj
    def status(obj: Context, phone: str, content: str | None, ip: str | None) -> None:
        """One number's counters: used, limit, remaining, when a full one frees."""
        usage = obj.run(lambda: obj.guard.status(phone, content=content, ip=ip))
        phone_hash = obj.run(lambda: obj.guard.identify(phone))[1]
        rows = [{k: v for k, v in u._asdict().items() if k != "age" or v is not None} for u in usage]
        lines = [f"{'policy':<16}{'used':>9}{'limit':>10}{'left':>9}  frees in"]
        for u in usage:
            frees = "-" if u.frees_in is None else f"{u.frees_in:,.0f} s"
            if u.age is not None:  # the live code: its wrong checks, and its age (never the code)
                frees = f"code issued {u.age:,.0f} s ago"
            used, limit, left = (_amount(n, u) for n in (u.used, u.limit, u.remaining))
            lines.append(f"{u.policy:<16}{used:>9}{limit:>10}{left:>9}  {frees}")
        obj.say({"phone_hash": phone_hash, "counters": rows}, "\n".join(lines))

    @group.command()
    @click.argument("phone")
    @json_option
    @click.pass_obj
    def reset(obj: Context, phone: str) -> None:
        """Forget one number's counters (its list entries stay)."""
        obj.run(lambda: obj.guard.reset(phone))
        obj.say({"reset": True}, "reset: its counters are forgotten")

    @group.command()
    @json_option
    @click.pass_obj
    def suspend(obj: Context) -> None:
        """Turn the emergency switch on: every worker stops sending."""
        obj.run(lambda: obj.guard.suspend())
        obj.say({"suspended": True}, "suspended: sending is off")

    @group.command()
    @json_option
    @click.pass_obj
    def resume(obj: Context) -> None:
        """Turn the emergency switch off."""
        obj.run(lambda: obj.guard.resume())
        obj.say({"suspended": False}, "resumed: sending is on")

    @group.group(name="list")
    def lists() -> None:
        """Change a shared Whitelist or Blacklist."""

    def list_command(verb: str, on: bool, summary: str) -> None:
        @lists.command(name=verb, help=summary)
        @click.argument("name")
        @click.argument("phone")
        @json_option
        @click.pass_obj
        def change(obj: Context, name: str, phone: str) -> None:
            def write() -> None:
                guard = obj.guard
                (guard.add_number if on else guard.remove_number)(name, phone)

            obj.run(write)
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
    @json_option
    @click.pass_obj
    def stats(obj: Context, day: str | None, by: str) -> None:
        """One day's statistics, in the statistics' time zone (the app's)."""
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
    @click.option(
        "--html",
        "page",
        type=click.Path(dir_okay=False, writable=True),
        help="Also write the review as one self-contained HTML page to this file.",
    )
    @json_option
    @click.pass_obj
    def report(obj: Context, day: str | None, page: str | None) -> None:
        """The daily review: the day against the day before and a week before, the top reasons
        and countries, and anomalies (then the exit code is 3, for a cron job to alert on).
        With --html FILE, also the page of it: per hour against the day before, conversion per
        country and network, the anomalies and the spend against the budget."""
        found = obj.run(lambda: obj.guard.report(day))
        if page is not None:
            html = review.render_page(obj.guard, found)
            try:
                Path(page).write_text(html, encoding="utf-8")
            except OSError as exc:
                raise BadInput(f"--html {page}: {exc}") from None
            click.echo(f"smsguard: the review page is in {page}", err=True)
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
        if found.day.checked:  # the guard checks the codes: how they were entered
            lines.append(
                f"codes checked: {found.day.checked:,}, lockouts {found.day.lockouts:,}; refused: "
                + (_pairs(found.day.checks) or "-")
            )
        lines.append("top denial reasons: " + (_pairs(dict(list(found.day.denied.items())[:5])) or "-"))
        lines.append("top countries: " + (_pairs(dict(list(found.day.countries.items())[:5])) or "-"))
        conversions = ", ".join(
            f"{scope} {rate:.0%}" for scope, rate in list(found.day.conversions.items())[:10]
        )
        lines.append("conversion by country and network: " + (conversions or "-"))
        if found.day.shadowed:
            lines.append("shadow policies would have denied: " + _pairs(found.day.shadowed))
        anomalies = found.anomalies
        lines.append("anomalies: " + ("none" if not anomalies else ""))
        lines += (f"  {line}" for line in anomalies)
        obj.say(found.as_dict(), "\n".join(lines))
        if anomalies:
            raise click.exceptions.Exit(ANOMALIES)

    @group.command()
    @json_option
    @click.pass_obj
    def check(obj: Context) -> None:
        """Is the backend safe to run on: it answers, the script is loaded, Redis does not
        evict, the app's clock agrees with Redis's, and these settings are the app's (a BAD
        line: exit code 1). Then the warnings of smsguard.checks on these settings (a warn
        line, on stderr with --json: a memory backend among several workers, no secret, fail
        mode open, no country list), which Django's manage.py check and the apps' start-up say
        too."""
        guard = obj.run(lambda: obj.built)
        diagnose = getattr(guard.backend, "diagnose", None)
        if diagnose is None:
            found = [("backend", True, f"{type(guard.backend).__name__}: in process, nothing to check")]
        else:
            found = diagnose(time.time())
            found.append(_settings_check(guard))
        warned = [
            f"warn {f.name} ({f.id}): {f.message.removeprefix('smsguard: ')} {f.hint}"
            for f in checks.findings(guard, backend=False)  # the backend's own lines are above
        ]
        obj.say(
            [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in found],
            "\n".join([f"{'ok ' if ok else 'BAD'} {name}: {detail}" for name, ok, detail in found] + warned),
        )
        if obj.as_json:  # the JSON is the checks' alone, as ever: the warnings go to stderr
            for line in warned:
                click.echo(line, err=True)
        if not all(ok for _, ok, _ in found):
            raise click.exceptions.Exit(1)

    return group


def _settings_check(guard: Guard) -> tuple[str, bool, str]:
    """``check``'s line on the app's settings: these, or what differs."""
    try:
        differ = agreement(guard)
    except (BackendUnavailable, BackendError, ConfigError) as exc:
        return ("app's settings", False, f"not read: {exc}")
    if differ is None:
        return ("app's settings", True, NO_FINGERPRINT)
    if differ:
        return ("app's settings", False, "; ".join(differ))
    return ("app's settings", True, "these are the app's (its fingerprint agrees)")


def _amount(n: float, usage: Usage) -> str:
    """A counter's number as ``status`` shows it: hits, or the policy's unit (``$12.34``)."""
    return f"{usage.unit}{n:,.2f}" if usage.unit == "$" else f"{n:,}"


def _totals(day: Day) -> str:
    return (
        f"attempts {day.attempts:,}  allowed {day.allowed:,}  denied {sum(day.denied.values()):,}  "
        f"refunded {day.refunded:,}  verified {day.verified:,}"
    )


def _pairs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items())


def _from_environment(config: Path | None) -> Guard:
    try:
        return Guard.from_settings(load_settings(config, os.environ), warn=False)  # check lists it
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


def _in_code(path: str) -> Guard:
    """The guard ``--guard`` names, imported from the current directory as an app server would."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return imported_guard(path, "--guard")
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


main = commands(_from_environment)


if __name__ == "__main__":  # pragma: no cover
    main()
