"""The `ctiserver` command: run the server, the Asterisk emulator, migrations, config check."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ctiserver.config import ConfigError, Settings, load_settings
from ctiserver.logs import LOG_FORMATS, configure_logging
from ctiserver.store.database import DatabaseUnavailable
from ctiserver.store.migrator import MigrationError

if TYPE_CHECKING:
    from ctiserver.acd.config import AcdConfig
    from ctiserver.store.accounts import Account
    from ctiserver.store.customer_import import ImportReport
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
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines as text or one JSON object a line (default: [server] log_format)",
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
    _user_parser(commands)
    customers = commands.add_parser("customers", help="customer records")
    customer_actions = customers.add_subparsers(
        dest="customers_action", required=True, metavar="ACTION"
    )
    customer_import = customer_actions.add_parser(
        "import",
        help="import customers from a UTF-8 CSV file (name, phones, accounts, grade, value,"
        " language, preferred_channel, notes); prints what was created, updated and skipped",
    )
    customer_import.add_argument("file", type=Path, help="CSV file with a header row")
    _report_parser(commands)
    _metrics_parser(commands)
    _demo_parser(commands)
    _simulate_parser(commands)
    return parser


def _metrics_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    metrics = commands.add_parser("metrics", help="historical metrics' summary rows")
    actions = metrics.add_subparsers(dest="metrics_action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild",
        help="rebuild the per-stay summary rows (metric_stays, metric_agent_time) of a range"
        " from the event log, one local day at a time",
    )
    days = rebuild.add_mutually_exclusive_group(required=True)
    days.add_argument("--from", dest="start", help="first day (ISO date)")
    days.add_argument(
        "--stale",
        action="store_true",
        help="the recent days whose rows can still change or are missing (what the server's"
        " upkeep runs every [metrics] summary_every_s)",
    )
    rebuild.add_argument("--to", dest="end", help="last day (included); default: --from")
    rebuild.add_argument("--timezone", help="IANA time zone of the days (default: as report)")


def _simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="run a scripted scenario (calls, agents, ACD) through the server and the emulator"
        " and print its metrics report as JSON",
    )
    simulate.add_argument("scenario", type=Path, help="scenario YAML file (see scenarios/)")
    simulate.add_argument(
        "--speed", type=float, default=1.0, help="emulated seconds per real second (1)"
    )
    simulate.add_argument("--seed", type=int, default=None, help="replace the scenario's seed")
    simulate.add_argument(
        "--by",
        choices=("queue", "agent", "skill", "centre"),
        action="append",
        help="report grouping (repeatable; default: centre and queue)",
    )
    simulate.add_argument(
        "--keep-database",
        action="store_true",
        help="keep the run's fresh database (its name is logged) instead of dropping it",
    )


def _simulate(arguments: argparse.Namespace, settings: Settings) -> int:
    """`ctiserver simulate`: the scenario's report as JSON on stdout; problems on stderr."""
    from ctiserver.sim.scenario import ScenarioError, load_scenario
    from ctiserver.sim.scenario_run import ScenarioStuck, run_scenario

    try:
        scenario = load_scenario(arguments.scenario, seed=arguments.seed)
    except ScenarioError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    if arguments.speed <= 0:
        print("ctiserver: --speed: must be positive", file=sys.stderr)
        return 2
    by = tuple(arguments.by or ("centre", "queue"))
    try:
        report = asyncio.run(
            run_scenario(
                scenario,
                settings,
                speed=arguments.speed,
                by=by,
                keep_database=arguments.keep_database,
            )
        )
    except (ScenarioStuck, ValueError) as exc:
        print(f"ctiserver: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return 0


def _report_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="historical figures (METRICS.md) from the event log for a range",
        description="Figures per queue, agent, skill or centre-wide for a range, per 15-minute"
        " interval, day or the whole range, with the variants in force printed. Dates and"
        " times are local to the centre's time zone (--timezone, else the queues' business"
        " hours zone, else UTC); a date as --to includes that day.",
    )
    report.add_argument(
        "--from", dest="start", required=True, help="first day or instant (ISO: 2026-03-02)"
    )
    report.add_argument("--to", dest="end", help="last day (included) or end instant")
    report.add_argument("--by", choices=("queue", "agent", "skill", "centre"), default="queue")
    report.add_argument("--grain", choices=("interval", "day", "range"), default="day")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.add_argument("--timezone", help="IANA time zone of the dates and the intervals")
    report.add_argument(
        "--set",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variant for this report (repeatable): sl_mode, sl_threshold_s,"
        " count_short_abandons, short_abandon_s, callback_wait, occupancy_includes_acw,"
        " fcr_window_s, fcr_scope, interval_s, timezone",
    )


def _user_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="manage sign-in accounts (agents, supervisors, admins)")
    actions = user.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("login", help="the name the person signs in with")
    add.add_argument("--role", required=True, choices=("agent", "supervisor", "admin"))
    add.add_argument("--name", default="", help="the person's name as colleagues see it")
    add.add_argument(
        "--agent", metavar="AGENT_ID", help="the ACD agent id the account takes calls as"
    )
    passwd = actions.add_parser("passwd", help="set an account's password (ends its sessions)")
    passwd.add_argument("login")
    for action in (add, passwd):
        action.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input instead of asking",
        )
    actions.add_parser("list", help="list the accounts")
    deactivate = actions.add_parser(
        "deactivate", help="stop an account from signing in and end its sessions"
    )
    deactivate.add_argument("login")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = load_settings(arguments.config)
        if arguments.command == "run" and arguments.config is not None:
            # Child processes (the server's summary upkeep) read the same file.
            os.environ["CTISERVER_CONFIG"] = str(arguments.config)
    except ConfigError as exc:
        print(f"ctiserver: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level, arguments.log_format or settings.server.log_format)
    if arguments.command == "config":
        print(json.dumps(_redacted(settings), indent=2, ensure_ascii=False))
        return 0
    if arguments.command == "ivr":
        return _ivr_check(arguments.files)
    try:
        if arguments.command == "user":
            return _user(arguments, settings)
        if arguments.command == "customers":
            return _customers_import(arguments.file, settings)
        if arguments.command == "acd":
            return _acd(arguments.acd_action, getattr(arguments, "file", None), settings)
        if arguments.command == "simulate":
            return _simulate(arguments, settings)
        if arguments.command == "report":
            return _report(arguments, settings)
        if arguments.command == "metrics":
            return _metrics_rebuild(arguments, settings)
        if arguments.command == "demo":
            return _demo(arguments, settings)
        if arguments.command == "run":
            from ctiserver import event_loop
            from ctiserver.app import run_server

            event_loop.run(
                run_server(settings, with_emulator=arguments.emulator), settings.server.event_loop
            )
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


def _report(arguments: argparse.Namespace, settings: Settings) -> int:
    """`ctiserver report`: figures for a range, as a table, CSV or JSON on stdout."""
    from ctiserver.metrics.reports import ParameterError

    overrides: dict[str, str] = {}
    for item in arguments.variants:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"ctiserver: --set {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        overrides[name.strip()] = value.strip()
    if arguments.timezone:
        overrides["timezone"] = arguments.timezone
    try:
        text = asyncio.run(_report_text(arguments, settings, overrides))
    except ParameterError as exc:
        flag = {"from": "--from", "to": "--to"}.get(exc.name, f"--set {exc.name}")
        if exc.name == "timezone" and arguments.timezone:
            flag = "--timezone"
        print(f"ctiserver: {flag}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


async def _metrics_acd_config(database: Database, settings: Settings) -> AcdConfig | None:
    """The ACD configuration reports take names, queue skills and the time zone from."""
    from ctiserver.acd.config import AcdConfigError, load_acd_config
    from ctiserver.acd.config_store import load_acd_config_from_db

    try:
        if settings.acd.config:
            return load_acd_config(Path(settings.acd.config))
        return await load_acd_config_from_db(database)
    except AcdConfigError as exc:
        # Names and queue skills come from it; the figures do not need it.
        print(f"ctiserver: ACD configuration unusable, names left out: {exc}", file=sys.stderr)
        return None


async def _report_text(
    arguments: argparse.Namespace, settings: Settings, overrides: dict[str, str]
) -> str:
    from ctiserver.metrics.report_source import report as best_report
    from ctiserver.metrics.reports import (
        centre_timezone,
        parse_grain,
        parse_range,
        settings_with,
        to_csv,
        to_table,
    )
    from ctiserver.metrics.settings import MetricSettings

    database = await _acd_database(settings)
    try:
        config = await _metrics_acd_config(database, settings)
        base = MetricSettings(timezone=centre_timezone(config) or "UTC")
        metric_settings = settings_with(base, overrides)
        grain = parse_grain("grain", arguments.grain)
        start, end = parse_range(arguments.start, arguments.end, metric_settings.zone, grain)
        report = await best_report(
            database,
            start,
            end,
            by=arguments.by,
            grain=grain,
            settings=metric_settings,
            config=config,
        )
    finally:
        await database.close()
    if arguments.format == "json":
        return json.dumps(report.as_json(), ensure_ascii=False, indent=2) + "\n"
    if arguments.format == "csv":
        return to_csv(report)
    return to_table(report)


def _metrics_rebuild(arguments: argparse.Namespace, settings: Settings) -> int:
    """`ctiserver metrics rebuild --from --to`: summary rows per local day, a line per day."""
    from ctiserver.metrics.reports import ParameterError

    try:
        asyncio.run(_metrics_rebuild_days(arguments, settings))
    except ParameterError as exc:
        print(f"ctiserver: --{exc.name}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _metrics_rebuild_days(arguments: argparse.Namespace, settings: Settings) -> None:
    from datetime import datetime

    from ctiserver.metrics.intervals import Grain
    from ctiserver.metrics.reports import centre_timezone, parse_range, settings_with
    from ctiserver.metrics.settings import MetricSettings
    from ctiserver.metrics.summary import Summary, rebuild, rebuild_days, stale_days

    database = await _acd_database(settings)
    try:
        config = await _metrics_acd_config(database, settings)
        overrides = {"timezone": arguments.timezone} if arguments.timezone else {}
        base = MetricSettings(timezone=centre_timezone(config) or "UTC")
        metric_settings = settings_with(base, overrides)

        def progress(begin: float, _: float, day: Summary) -> None:
            print(
                f"{datetime.fromtimestamp(begin, metric_settings.zone):%Y-%m-%d}:"
                f" {len(day.stays)} stays, {len(day.agent_time)} agent-time rows,"
                f" {day.unfinished} unfinished",
                flush=True,
            )

        if arguments.stale:
            for begin, stop in await stale_days(database, time.time(), metric_settings):
                progress(
                    begin, stop, await rebuild(database, begin, stop, settings=metric_settings)
                )
            return
        start, end = parse_range(arguments.start, arguments.end, metric_settings.zone, Grain.DAY)
        await rebuild_days(database, start, end, settings=metric_settings, progress=progress)
    finally:
        await database.close()


def _customers_import(path: Path, settings: Settings) -> int:
    """`ctiserver customers import FILE`: exit 1 when the file or any line was refused."""
    from ctiserver.store.customer_import import ImportFileError

    try:
        report = asyncio.run(_import_customers(settings, path))
    except ImportFileError as exc:
        print(f"ctiserver: {path}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{path}: {report.created} created, {report.updated} updated,"
        f" {report.unchanged} unchanged, {len(report.skipped)} skipped"
    )
    for skipped in report.skipped:
        print(f"{path}:{skipped.line}: {skipped.reason}", file=sys.stderr)
    return 1 if report.skipped else 0


async def _import_customers(settings: Settings, path: Path) -> ImportReport:
    from ctiserver.store.customer_import import import_customers_csv

    database = await _acd_database(settings)
    try:
        return await import_customers_csv(database, path)
    finally:
        await database.close()


def _user(arguments: argparse.Namespace, settings: Settings) -> int:
    """`ctiserver user add|passwd|list|deactivate`."""
    from ctiserver.auth.passwords import password_problem

    action = arguments.user_action
    password = ""
    if action in ("add", "passwd"):
        if action == "add" and arguments.role == "agent" and not arguments.agent:
            print("ctiserver: an agent account needs --agent AGENT_ID", file=sys.stderr)
            return 2
        password_or_none = _read_new_password(arguments.password_stdin)
        if password_or_none is None:
            return 2
        password = password_or_none
        problem = password_problem(password)
        if problem is not None:
            print(f"ctiserver: {problem}", file=sys.stderr)
            return 2
    message, status = asyncio.run(_user_action(arguments, settings, password))
    print(message, file=sys.stdout if status == 0 else sys.stderr)
    return status


def _read_new_password(from_stdin: bool) -> str | None:
    """The new password: stdin's first line, or asked twice on the terminal."""
    import getpass

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError:
        print("ctiserver: no password given (use --password-stdin to pipe one)", file=sys.stderr)
        return None
    if first != again:
        print("ctiserver: the two passwords differ", file=sys.stderr)
        return None
    return first


async def _user_action(
    arguments: argparse.Namespace, settings: Settings, password: str
) -> tuple[str, int]:
    """Run a `user` action on the database: the message to print and the exit status."""
    from ctiserver.auth.passwords import hash_password
    from ctiserver.store import accounts

    database = await _acd_database(settings)
    try:
        login = arguments.login if arguments.user_action != "list" else ""
        if arguments.user_action == "add":
            try:
                account = await accounts.create_account(
                    database,
                    login,
                    role=arguments.role,
                    name=arguments.name,
                    agent_login=arguments.agent or None,
                    password_hash=await hash_password(password),
                )
            except accounts.AccountExists as exc:
                return f"ctiserver: {exc}", 1
            agent = f", takes calls as agent {account.agent_login}" if account.agent_login else ""
            return f"account {account.login} created ({account.role}{agent})", 0
        if arguments.user_action == "list":
            return _account_table(await accounts.list_accounts(database)), 0
        existing = await accounts.get_account(database, login)
        if existing is None:
            return f"ctiserver: no account {login!r}", 1
        if arguments.user_action == "passwd":
            async with database.transaction() as conn:
                await accounts.set_password(conn, existing.id, await hash_password(password))
                ended = await accounts.delete_account_sessions(conn, existing.id)
            return f"password of {login} changed; {_count(ended, 'session')} ended", 0
        await accounts.deactivate_account(database, login)
        return f"account {login} deactivated; it can no longer sign in", 0
    finally:
        await database.close()


def _account_table(rows: Sequence[Account]) -> str:
    if not rows:
        return "no accounts (create one with: ctiserver user add LOGIN --role admin)"
    table = [("LOGIN", "ROLE", "AGENT", "ACTIVE", "NAME")] + [
        (a.login, a.role, a.agent_login or "-", "yes" if a.active else "no", a.name) for a in rows
    ]
    # Width by code points: good enough for a terminal table; CJK names come last.
    widths = [max(len(row[column]) for row in table) for column in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in table
    )


def _redacted(settings: Settings) -> dict[str, object]:
    data = dataclasses.asdict(settings)
    data["ami"]["secret"] = "***"
    if data["http"]["metrics_token"]:
        data["http"]["metrics_token"] = "***"
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


def _demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="a whole centre on this machine: server, Asterisk emulator, sample customers,"
        " bot agents and callers; prints where to sign in",
        description="Starts embedded PostgreSQL (unless database.dsn is set), the server, the"
        " Asterisk emulator, sample customers with history, bot agents that answer, talk and"
        " wrap up over the agent desktop's websocket (agents 1001 and 1002 stay free for you)"
        " and callers arriving at random who go through the IVR, wait, give up, ask for"
        " callbacks and answer surveys. Ctrl-C stops it cleanly.",
    )
    demo.add_argument(
        "--calls-per-minute", type=float, default=3.0, help="Poisson caller arrivals (3)"
    )
    demo.add_argument(
        "--agents",
        type=int,
        default=4,
        help="bot agents (4: the sample centre's 1003-1006; more are made up as 2001...)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many minutes (default: Ctrl-C)",
    )
    demo.add_argument("--seed", type=int, default=None, help="random seed for the callers and bots")


def _demo(arguments: argparse.Namespace, settings: Settings) -> int:
    """`ctiserver demo`: run until Ctrl-C or --duration; 0 after a clean stop."""
    from ctiserver import event_loop
    from ctiserver.demo import DemoOptions, run_demo

    if arguments.calls_per_minute < 0 or arguments.agents < 0:
        print("ctiserver: --calls-per-minute and --agents must be 0 or more", file=sys.stderr)
        return 2
    if arguments.duration is not None and arguments.duration <= 0:
        print("ctiserver: --duration must be a positive number of minutes", file=sys.stderr)
        return 2
    options = DemoOptions(
        calls_per_minute=arguments.calls_per_minute,
        bots=arguments.agents,
        duration_s=None if arguments.duration is None else arguments.duration * 60.0,
        seed=arguments.seed,
    )
    event_loop.run(run_demo(settings, options), settings.server.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
