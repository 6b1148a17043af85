"""The ``smsguard`` command (also ``python -m smsguard``, and ``flask smsguard`` in a Flask app
with the extension): look at and steer a guard from a shell.

The guard is built from the same settings as ``Guard.from_settings``: ``SMSGUARD_*`` environment
variables, over the keys of a TOML file given with ``--config`` (top level or a ``[smsguard]``
table, in lower case without the prefix: ``storage_uri = "redis://..."``).

Exit codes: 0 done; 1 the backend could not be reached, or a check failed; 2 a bad command,
setting or number.
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

from smsguard.errors import BackendUnavailable, ConfigError, InvalidInput
from smsguard.guard import Guard

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

T = TypeVar("T")
PREFIX = "SMSGUARD_"


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


def _from_environment(config: Path | None) -> Guard:
    try:
        return Guard.from_settings(load_settings(config, os.environ))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


main = commands(_from_environment)


if __name__ == "__main__":  # pragma: no cover
    main()
