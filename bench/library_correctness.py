"""Correctness of our AMI/FastAGI layer, panoramisk 1.4 and pyst2 0.5.1 on the transcripts.

Every check runs the libraries' real code paths against bytes recorded from
Asterisk 22 (shared/asterisk/scenarios), over loopback TCP where a library
only works with a socket:

  ami-framing     every incoming AMI frame of all 26 scenarios, fed in random
                  read sizes (1 B .. 4 KiB, seeded), against a plain split of
                  each recorded frame (repeated headers kept in order)
  utf8            a frame with `CallerIDName: 王小明`, in one read and cut
                  inside a character
  event-list      CoreShowChannels (01) and Status (13) answered as one result
                  holding the start response, every item and the Complete event
  originate-event OriginateResponse (05c) carries the Originate's ActionID and
                  must still reach an OriginateResponse event handler
  userevent       UserEvent (01) with the action's ActionID reaches its handler
  sync-originate  a synchronous Originate answered `Success` / `Originate
                  successfully queued` (the same frame Asterisk sends for an
                  async one, 05; the action is sent without `Async`)
  agi-hangup      the FastAGI session of 03a (hang-up during STREAM FILE, then
                  commands on the dead channel): does every command get its
                  own reply despite the `HANGUP` line?
  agi-511         `511 Command Not Permitted on a dead channel` recognisable
  agi-timeout     `200 result= (timeout)` (02) recognisable as a timeout
  fastagi-server  the library's FastAGI server usable on this Python

Then the import/deprecation behaviour on every CPython found (3.11, 3.12,
3.13). Prints a table and, as the last line, JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import logging
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyst2_driver import collect_pyst2  # beside this script

from ctiserver.asterisk.agi import codec as agi_codec
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiHangup, AgiSession
from ctiserver.asterisk.ami.client import AmiClient, AmiConfig
from ctiserver.asterisk.ami.codec import FrameParser, Message
from ctiserver.sim.transcript import Record, scenario, scenarios

LIBS = ("ours", "panoramisk", "pyst2")
PASS, FAIL, PART = "pass", "FAIL", "partial"
UTF8_FRAME = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/pstn-000000ff\r\n"
    "CallerIDNum: 5551234\r\nCallerIDName: 王小明\r\nUniqueid: 1795417999.1\r\n\r\n"
).encode()
TIMEOUT = 5.0


@dataclass
class Verdict:
    status: str
    detail: str


@dataclass
class Check:
    name: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def set(self, lib: str, status: str, detail: str) -> None:
        self.verdicts[lib] = Verdict(status, detail)


def guarded(check: Check, lib: str, fn: Callable[[], tuple[str, str]]) -> None:
    """Run one library's part of a check; an exception is a finding, not a crash."""
    try:
        status, detail = fn()
    except Exception as exc:
        status, detail = FAIL, f"raised {type(exc).__name__}: {str(exc)[:120]}"
    check.set(lib, status, detail)


# --- frame-level helpers ---------------------------------------------------------


def reference_headers(frame: str) -> dict[str, Any]:
    """A recorded frame split plainly: first `: ` of each line, repeats as a list."""
    headers: dict[str, Any] = {}
    for line in frame.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, _, value = line.partition(":")
        if key in headers:
            first = headers[key]
            headers[key] = [*first, value] if isinstance(first, list) else [first, value]
        else:
            headers[key] = value
    return headers


def ours_headers(message: Message) -> dict[str, Any]:
    headers: dict[str, Any] = dict(message.headers)
    for key, value in message.repeated or []:
        first = headers[key]
        headers[key] = [*first, value] if isinstance(first, list) else [first, value]
    return headers


def random_chunks(data: bytes, rng: random.Random) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 7, 64, 500, 1460, 4096))
        yield data[pos : pos + size]
        pos += size


def parse_ours(chunks: list[bytes]) -> list[dict[str, Any]]:
    parser = FrameParser()
    return [ours_headers(m) for data in chunks for m in parser.feed(data)]


def parse_panoramisk(chunks: list[bytes], encoding: str = "utf8") -> list[dict[str, Any]]:
    from panoramisk.ami_protocol import AMIProtocol

    protocol = AMIProtocol()
    protocol.connection_made(None)
    protocol.encoding = encoding  # panoramisk.Manager sets its `encoding` (utf8)
    out: list[dict[str, Any]] = []
    protocol.handle_message = lambda message: out.append(dict(message.items()))
    for data in chunks:
        protocol.data_received(data)
    for headers in out:
        if headers.get("content") == "":  # the body slot, stored as a header
            del headers["content"]
    return out


def check_ami_framing() -> Check:
    check = Check("ami-framing")
    files: list[tuple[str, bytes, list[dict[str, Any]]]] = []
    for scen in scenarios():
        for path in scen.ami_files:
            frames = [r.data for r in scen.ami(path.name) if r.incoming and r.data]
            reference = [reference_headers(f[:-4]) for f in frames[1:]]
            files.append((f"{scen.name}/{path.name}", "".join(frames).encode(), reference))
    rng = random.Random(20261123)
    cut = [list(random_chunks(data, rng)) for _, data, _ in files]
    total = sum(len(reference) for _, _, reference in files)

    def compare(parse: Callable[[list[bytes]], list[dict[str, Any]]]) -> tuple[str, str]:
        same = 0
        kinds: dict[str, int] = {}
        for (name, _, reference), chunks in zip(files, cut, strict=True):
            got = parse(chunks)
            if len(got) != len(reference):
                kind = f"{name.split('_')[0]}: {len(reference)} frames -> {len(got)} messages"
                kinds[kind] = kinds.get(kind, 0) + 1
                continue
            for a, b in zip(reference, got, strict=True):
                if a == b:
                    same += 1
                    continue
                for key in set(a) | set(b):
                    va, vb = a.get(key), b.get(key)
                    if va == vb:
                        continue
                    if vb is None:
                        kind = f"empty last header dropped ({key})"
                    elif isinstance(va, list):
                        kind = f"repeated {key}: only one value kept"
                    elif isinstance(va, str) and isinstance(vb, str) and va.strip() == vb:
                        kind = "values stripped of spaces"
                    elif isinstance(va, str) and unquote(va).strip() == vb:
                        kind = f"{key} URL-decoded"
                    else:
                        kind = f"{key} differs"
                    kinds[kind] = kinds.get(kind, 0) + 1
        detail = f"{same}/{total} frames identical"
        if kinds:
            top = sorted(kinds.items(), key=lambda kv: -kv[1])[:4]
            detail += "; " + ", ".join(f"{k} x{n}" for k, n in top)
        return (PASS if same == total else FAIL), detail

    guarded(check, "ours", lambda: compare(parse_ours))
    guarded(check, "panoramisk", lambda: compare(parse_panoramisk))
    guarded(check, "pyst2", lambda: compare(collect_pyst2))
    return check


def check_utf8() -> Check:
    check = Check("utf8")
    stream = b"Asterisk Call Manager/11.0.0\r\n" + UTF8_FRAME
    inside = stream.index("王".encode()) + 1  # cut after the first byte of 王

    def run(parse: Callable[[list[bytes]], list[dict[str, Any]]]) -> tuple[str, str]:
        whole = parse([stream])[0].get("CallerIDName")
        split = parse([stream[:inside], stream[inside:]])[0].get("CallerIDName")
        ok = whole == split == "王小明"
        return (PASS if ok else FAIL), f"one read {whole!r}, cut inside a character {split!r}"

    guarded(check, "ours", lambda: run(parse_ours))
    guarded(check, "panoramisk", lambda: run(parse_panoramisk))
    status, detail = check.verdicts["panoramisk"].status, check.verdicts["panoramisk"].detail
    ascii_value = parse_panoramisk([stream], "ascii")[0].get("CallerIDName")
    check.set(
        "panoramisk",
        status,
        f"{detail} (utf8, as Manager sets); bare AMIProtocol default ascii: {ascii_value!r}",
    )
    guarded(check, "pyst2", lambda: run(collect_pyst2))
    return check


# --- a recorded Asterisk on loopback -------------------------------------------------

_ID = "\x00ID\x00"


def recorded_answers(records: list[Record], action_id: str) -> list[str]:
    """The incoming frames between the action `action_id` and the next action,
    with that ActionID turned into a placeholder for the client's own."""
    frames: list[str] = []
    collecting = False
    for record in records:
        if not record.incoming:
            if collecting:
                break
            collecting = f"\r\nActionID: {action_id}\r\n" in record.data
            continue
        if collecting and record.data:
            frames.append(record.data.replace(f"ActionID: {action_id}\r\n", f"ActionID: {_ID}\r\n"))
    if not frames:
        raise KeyError(f"no answer to {action_id} in the transcript")
    return frames


class AmiReplay:
    """Stands in for Asterisk's AMI: banner, Login accepted, and for the actions
    in `answers` (by name) the recorded frames; anything else gets `Success`."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = {k.lower(): v for k, v in answers.items()}
        self.actions: list[str] = []
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.2)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(b"Asterisk Call Manager/11.0.0\r\n")
        buffer = b""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                frame, buffer = buffer.split(b"\r\n\r\n", 1)
                headers = reference_headers(frame.decode("utf-8", "replace").strip("\r\n"))
                name = str(headers.get("Action", ""))
                action_id = headers.get("ActionID")
                self.actions.append(name)
                id_line = f"ActionID: {action_id}\r\n" if isinstance(action_id, str) else ""
                if name.lower() == "logoff":
                    conn.sendall(f"Response: Goodbye\r\n{id_line}Message: Bye\r\n\r\n".encode())
                    return
                if name.lower() == "login":
                    reply = [
                        f"Response: Success\r\n{id_line}Message: Authentication accepted\r\n\r\n"
                    ]
                elif name.lower() in self.answers:
                    reply = self.answers.pop(name.lower())
                else:
                    reply = [f"Response: Success\r\n{id_line}\r\n"]
                text = "".join(reply).replace(f"ActionID: {_ID}\r\n", id_line)
                conn.sendall(text.encode("utf-8"))


# --- AMI behaviour checks, one driver per library -------------------------------------


@dataclass
class AmiOutcome:
    result: Any = None  # what the library returned for the action
    events: list[tuple[str, Any]] = field(default_factory=list)  # (name, headers)
    error: str | None = None
    connections: int = 0
    log: list[str] = field(default_factory=list)  # warnings/errors the library logged
    body: str = ""  # pyst2: text of the message that is not headers


def run_ours(answers: dict[str, list[str]], action: str, headers: dict[str, str]) -> AmiOutcome:
    outcome = AmiOutcome()

    async def main() -> None:
        replay = AmiReplay(answers)
        client = AmiClient(
            AmiConfig(
                port=replay.port,
                username="cti",
                secret="cti",
                ping_interval=None,
                reconnect=False,
                action_timeout=TIMEOUT,
            )
        )
        client.subscribe("*", lambda m: outcome.events.append((m.event or "", ours_headers(m))))
        try:
            await client.connect()
            outcome.result = await client.action(action, headers)
            await asyncio.sleep(0.2)  # let the dispatcher deliver
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), TIMEOUT)
            outcome.connections = replay.connections
            replay.close()

    asyncio.run(main())
    return outcome


def run_panoramisk(
    answers: dict[str, list[str]], action: str, headers: dict[str, str]
) -> AmiOutcome:
    from panoramisk import Manager

    outcome = AmiOutcome()

    async def main() -> None:
        replay = AmiReplay(answers)
        manager = Manager(
            loop=asyncio.get_running_loop(),
            host="127.0.0.1",
            port=replay.port,
            username="cti",
            secret="cti",
            ping_delay=3600,
            reconnect_timeout=3600,
        )
        manager.register_event("*", lambda mgr, ev: outcome.events.append((ev.event, dict(ev))))
        try:
            await manager.connect()
            await asyncio.sleep(0)  # connection_made() runs as the connect task's callback
            await asyncio.wait_for(manager.authenticated_future, TIMEOUT)
            future = manager.send_action({"Action": action, **headers})
            outcome.result = await asyncio.wait_for(future, TIMEOUT)
            await asyncio.sleep(0.2)
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            manager.close()
            await asyncio.sleep(0.05)
            outcome.connections = replay.connections
            replay.close()

    capture = _LogCapture()
    with capture.on("asyncio", "panoramisk"):
        asyncio.run(main())
    outcome.log = capture.lines
    return outcome


class _LogCapture(logging.Handler):
    """Keeps what a library logs (its tracebacks are findings, not noise)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        text = record.getMessage().splitlines()[0]
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.lines.append(f"{record.name}: {text}")

    @contextlib.contextmanager
    def on(self, *names: str) -> Iterator[None]:
        loggers = [logging.getLogger(name) for name in names]
        saved = [(lg.level, lg.propagate) for lg in loggers]
        for lg in loggers:
            lg.addHandler(self)
            lg.setLevel(logging.DEBUG)
            lg.propagate = False
        try:
            yield
        finally:
            for lg, (level, propagate) in zip(loggers, saved, strict=True):
                lg.removeHandler(self)
                lg.setLevel(level)
                lg.propagate = propagate


def run_pyst2(answers: dict[str, list[str]], action: str, headers: dict[str, str]) -> AmiOutcome:
    import asterisk.manager as manager

    outcome = AmiOutcome()
    replay = AmiReplay(answers)
    mgr = manager.Manager()
    mgr.register_event("*", lambda ev, m: outcome.events.append((ev.name, dict(ev.headers))))
    try:
        mgr.connect("127.0.0.1", replay.port)
        mgr.login("cti", "cti")
        message = mgr.send_action({"Action": action, **headers})
        outcome.result = dict(message.headers)
        outcome.body = message.data
        time.sleep(0.3)  # events arrive on pyst2's dispatch thread
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            mgr.close()
        outcome.connections = replay.connections
        replay.close()
    return outcome


RUNNERS: dict[str, Callable[[dict[str, list[str]], str, dict[str, str]], AmiOutcome]] = {
    "ours": run_ours,
    "panoramisk": run_panoramisk,
    "pyst2": run_pyst2,
}


def check_event_list() -> Check:
    check = Check("event-list")
    cases = [
        ("01", "ami.jsonl", "cti-9", "CoreShowChannels", {}),
        ("13", "ami2.jsonl", "cti-4", "Status", {"Variables": "CTI_STATE,CTI_SKILL,BRIDGEPEER"}),
    ]

    def run(lib: str) -> tuple[str, str]:
        notes, ok = [], True
        for number, file_name, action_id, action, headers in cases:
            frames = recorded_answers(scenario(number).ami(file_name), action_id)
            items = len(frames) - 2  # start response ... Complete event
            outcome = RUNNERS[lib]({action: frames}, action, headers)
            leaked = sum(1 for name, _ in outcome.events if name not in ("FullyBooted",))
            if outcome.error:
                ok = False
                notes.append(f"{action}: {outcome.error[:80]}")
            elif lib == "ours":
                got = len(outcome.result.items)
                good = got == items and outcome.result.complete is not None and leaked == 0
                ok &= good
                notes.append(f"{action}: result with {got}/{items} items + Complete")
            elif lib == "panoramisk":
                got = len(outcome.result) if isinstance(outcome.result, list) else 1
                good = got == items + 2 and leaked == 0
                ok &= good
                notes.append(f"{action}: list of {got} messages (start+{items}+Complete)")
            else:
                ok = False
                unparsed = outcome.body.count("Event: ")
                where = (
                    f"as unparsed text in the response's .data ({unparsed} frames)"
                    if unparsed
                    else f"as {leaked} unrelated events"
                )
                notes.append(
                    f"{action}: returns the start response alone, the {items} items and "
                    f"Complete come {where}"
                )
        return (PASS if ok else FAIL), "; ".join(notes)

    for lib in LIBS:
        guarded(check, lib, functools.partial(run, lib))
    return check


def check_originate_event() -> Check:
    check = Check("originate-event")
    frames = recorded_answers(scenario("05c").ami(), "cti-2")
    headers = {
        "Channel": "PJSIP/agent1001",
        "Context": "cti-hold",
        "Exten": "agent",
        "Priority": "1",
        "Timeout": "15000",
        "Async": "true",
    }

    def run(lib: str) -> tuple[str, str]:
        outcome = RUNNERS[lib]({"Originate": frames}, "Originate", headers)
        if outcome.error:
            return FAIL, outcome.error[:100]
        delivered = [h for name, h in outcome.events if name == "OriginateResponse"]
        if delivered:
            return PASS, f"handler got OriginateResponse (Response: {delivered[0].get('Response')})"
        if lib == "panoramisk" and isinstance(outcome.result, list):
            names = [m.get("Event") or m.get("Response") for m in outcome.result]
            return (
                FAIL,
                f"never reaches the event handler; returned inside the action result {names}",
            )
        return FAIL, "OriginateResponse never delivered"

    for lib in LIBS:
        guarded(check, lib, functools.partial(run, lib))
    return check


def check_userevent() -> Check:
    check = Check("userevent")
    frames = recorded_answers(scenario("01").ami(), "cti-13")
    headers = {"UserEvent": "CTIProbe", "Phase": "events-on"}

    def run(lib: str) -> tuple[str, str]:
        outcome = RUNNERS[lib]({"UserEvent": frames}, "UserEvent", headers)
        if outcome.error:
            return FAIL, outcome.error[:100]
        got = [h for name, h in outcome.events if name == "UserEvent"]
        if got:
            return PASS, f"handler got UserEvent with ActionID {got[0].get('ActionID')!r}"
        return FAIL, "UserEvent never delivered"

    for lib in LIBS:
        guarded(check, lib, functools.partial(run, lib))
    return check


def check_sync_originate() -> Check:
    check = Check("sync-originate")
    frames = recorded_answers(scenario("05").ami(), "cti-2")[:1]  # the Success response only
    headers = {
        "Channel": "PJSIP/agent1001",
        "Context": "cti-hold",
        "Exten": "agent",
        "Priority": "1",
        "Timeout": "20000",
    }

    def run(lib: str) -> tuple[str, str]:
        outcome = RUNNERS[lib]({"Originate": frames}, "Originate", headers)
        reconnects = (
            f"; the AMI connection was dropped ({outcome.connections} connections)"
            if (outcome.connections > 1)
            else ""
        )
        if outcome.error:
            logged = "; logged: " + " | ".join(outcome.log)[:160] if outcome.log else ""
            return FAIL, f"the action never resolves ({outcome.error[:40]}){reconnects}{logged}"
        result = outcome.result
        if lib == "ours":
            text = result.response.get("Message")
        elif lib == "panoramisk":
            text = result.get("Message") if not isinstance(result, list) else str(result)
        else:
            text = result.get("Message")
        return PASS, f"returned {text!r}{reconnects}"

    for lib in LIBS:
        guarded(check, lib, functools.partial(run, lib))
    return check


# --- FastAGI --------------------------------------------------------------------------


@dataclass
class AgiScript:
    environment: str
    commands: list[str]  # as the recorder sent them, without the line end
    groups: list[list[str]]  # lines Asterisk sent after each command

    @property
    def replies(self) -> list[str]:
        """The reply to each command: the first line after it that is not HANGUP."""
        return [next(line for line in group if line != "HANGUP") for group in self.groups]


def agi_script(number: str, conn: int = 1) -> AgiScript:
    records = scenario(number).agi_connections()[conn]
    environment = records[0].data
    commands: list[str] = []
    groups: list[list[str]] = []
    for record in records[1:]:
        if not record.incoming and record.data:
            commands.append(record.data.rstrip("\n"))
            groups.append([])
        elif record.incoming and record.data and groups:
            groups[-1].append(record.data.rstrip("\n"))
    return AgiScript(environment, commands, groups)


class AgiReplay(threading.Thread):
    """Plays Asterisk's side of a recorded FastAGI session: connects to the
    library's server, sends the environment, answers the n-th command with
    what Asterisk sent after the n-th command (HANGUP lines included)."""

    def __init__(self, port: int, script: AgiScript) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.script = script
        self.received: list[str] = []

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            sock.sendall(self.script.environment.encode())
            reader = sock.makefile("rb")
            for group in self.script.groups:
                line = reader.readline()
                if not line:
                    return
                self.received.append(line.decode().rstrip("\n"))
                sock.sendall("".join(f"{item}\n" for item in group).encode())
            with contextlib.suppress(OSError):
                reader.read()  # until the library closes


def agi_ours(script: AgiScript) -> list[Any]:
    results: list[Any] = []

    async def handler(session: AgiSession) -> None:
        for command in script.commands:
            try:
                results.append(await session.command(*shlex.split(command)))
            except AgiHangup as exc:
                results.append(exc.response)

    async def main() -> None:
        server = FastAgiServer(port=0, command_timeout=TIMEOUT)
        server.route("ivr", handler)
        async with server:
            replay = AgiReplay(server.port, script)
            replay.start()
            await asyncio.to_thread(replay.join, 2 * TIMEOUT)

    asyncio.run(main())
    return results


def agi_panoramisk(script: AgiScript) -> list[Any]:
    from panoramisk.fast_agi import Application

    results: list[Any] = []

    async def handler(request: Any) -> None:
        for command in script.commands:
            results.append(await asyncio.wait_for(request.send_command(command), TIMEOUT))

    async def main() -> None:
        app = Application()
        app.add_route("ivr", handler)
        server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
        replay = AgiReplay(server.sockets[0].getsockname()[1], script)
        replay.start()
        await asyncio.to_thread(replay.join, 2 * TIMEOUT)
        server.close()

    logging.getLogger("panoramisk").setLevel(logging.CRITICAL)
    asyncio.run(main())
    return results


def pyst2_agi(stdin: Any, stdout: Any) -> Any:
    import asterisk.agi

    return asterisk.agi.AGI(stdin=stdin, stdout=stdout, stderr=io.StringIO())


def pyst2_parse(line: str) -> Any:
    agi = pyst2_agi(io.StringIO("\n" + line + "\n"), io.StringIO())
    try:
        return agi.get_result()
    except Exception as exc:
        return f"{type(exc).__name__}{exc.args}"


def agi_pyst2(script: AgiScript, text_mode: bool) -> list[Any]:
    """pyst2 has no FastAGI server on Python 3 (asterisk.fastagi imports
    SocketServer); this is what its docs suggest: AGI(stdin=, stdout=) on the
    accepted socket's files, run in the main thread (AGI() installs a SIGHUP
    handler)."""
    results: list[Any] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        replay = AgiReplay(server.getsockname()[1], script)
        replay.start()
        conn, _ = server.accept()
        with conn:
            rfile: Any
            wfile: Any
            if text_mode:
                rfile = conn.makefile("r", encoding="utf-8", newline="\n")
                wfile = conn.makefile("w", encoding="utf-8")
            else:
                rfile, wfile = conn.makefile("rb"), conn.makefile("wb")
            agi = pyst2_agi(rfile, wfile)
            for command in script.commands:
                try:
                    agi.send_command(command)
                    results.append(agi.get_result())
                except Exception as exc:
                    results.append(f"{type(exc).__name__}{exc.args}")
                    if not text_mode or isinstance(exc, ValueError):
                        break
            conn.shutdown(socket.SHUT_WR)
        replay.join(2 * TIMEOUT)
    return results


def check_agi_hangup() -> tuple[Check, Check]:
    hangup, dead = Check("agi-hangup"), Check("agi-511")
    script = agi_script("03a")
    expected = script.replies
    total = len(expected)

    def run_ours() -> tuple[str, str]:
        got = agi_ours(script)
        good = sum(
            1 for g, e in zip(got, expected, strict=False) if g == agi_codec.parse_response(e)
        )
        return (PASS if good == total else FAIL), (
            f"{good}/{total} commands got their own reply; result=-1, 511 -> AgiHangup"
        )

    def run_panoramisk() -> tuple[str, str]:
        from panoramisk.utils import parse_agi_result

        got = agi_panoramisk(script)
        good = sum(1 for g, e in zip(got, expected, strict=False) if g == parse_agi_result(e))
        first_bad = next(
            (
                i
                for i, (g, e) in enumerate(zip(got, expected, strict=False))
                if g != parse_agi_result(e)
            ),
            None,
        )
        detail = f"{good}/{total} commands got their own reply"
        if first_bad is not None and first_bad + 2 < len(got):
            cmd = script.commands[first_bad + 2]
            detail += (
                f"; from command {first_bad + 1} on, each gets the previous reply "
                f"(`{cmd}` -> {got[first_bad + 2].get('result')})"
            )
        return (PASS if good == total else FAIL), detail

    def run_pyst2() -> tuple[str, str]:
        binary = agi_pyst2(script, text_mode=False)
        got = agi_pyst2(script, text_mode=True)
        want = [pyst2_parse(e) for e in expected]
        good = sum(1 for g, e in zip(got, want, strict=False) if g == e)
        crash = next((g for g in got if isinstance(g, str) and g.startswith("ValueError")), None)
        detail = (
            f"on the socket's binary files: {str(binary[0])[:60]}; with text files "
            f"{good}/{total} commands answered"
        )
        if crash:
            detail += f", then {crash[:70]} on the HANGUP line"
        return (PASS if good == total else FAIL), detail

    guarded(hangup, "ours", run_ours)
    guarded(hangup, "panoramisk", run_panoramisk)
    guarded(hangup, "pyst2", run_pyst2)

    line = "511 Command Not Permitted on a dead channel or intercept routine"

    def dead_ours() -> tuple[str, str]:
        response = agi_codec.parse_response(line)
        return (PASS if response.code == 511 and response.message else FAIL), (
            f"code {response.code}, message kept; the session raises AgiHangup"
        )

    def dead_panoramisk() -> tuple[str, str]:
        from panoramisk.utils import parse_agi_result

        result = parse_agi_result(line)
        return PART, f"{result.get('error')} with status_code {result.get('status_code')}"

    def dead_pyst2() -> tuple[str, str]:
        return PART, f"raises {pyst2_parse(line)[:70]}: Asterisk's text lost"

    guarded(dead, "ours", dead_ours)
    guarded(dead, "panoramisk", dead_panoramisk)
    guarded(dead, "pyst2", dead_pyst2)
    return hangup, dead


def check_agi_timeout() -> Check:
    check = Check("agi-timeout")
    line = next(r.data.rstrip("\n") for r in scenario("02").agi() if "(timeout)" in r.data)

    def ours() -> tuple[str, str]:
        response = agi_codec.parse_response(line)
        return (PASS if response.timed_out else FAIL), (
            f"result={response.result!r} data={response.data!r} timed_out={response.timed_out}"
        )

    def panoramisk() -> tuple[str, str]:
        from panoramisk.utils import parse_agi_result

        result = parse_agi_result(line)
        return (PASS if "timeout" in repr(result) else FAIL), f"{result} (same as an empty result)"

    def pyst2() -> tuple[str, str]:
        result = pyst2_parse(line)
        return (PASS if "timeout" in repr(result) else FAIL), f"{result} (same as an empty result)"

    guarded(check, "ours", ours)
    guarded(check, "panoramisk", panoramisk)
    guarded(check, "pyst2", pyst2)
    return check


def check_fastagi_server() -> Check:
    check = Check("fastagi-server")
    check.set("ours", PASS, "FastAgiServer (asyncio) served the 03a replay above")

    def panoramisk() -> tuple[str, str]:
        from panoramisk.fast_agi import Application

        async def probe() -> str:
            app = Application()
            app.add_route("async", lambda_async)
            try:
                app.add_route("plain", lambda request: None)
            except AttributeError as exc:
                return f"async handlers work; a plain-function route raises AttributeError ({exc})"
            return "async and plain handlers work"

        async def lambda_async(request: Any) -> None:
            return None

        detail = asyncio.run(probe())
        return (PART if "raises" in detail else PASS), detail

    def pyst2() -> tuple[str, str]:
        try:
            import asterisk.fastagi  # noqa: F401
        except ImportError as exc:
            return FAIL, f"import asterisk.fastagi: {type(exc).__name__}: {exc}"
        return PASS, "asterisk.fastagi imports"

    guarded(check, "panoramisk", panoramisk)
    guarded(check, "pyst2", pyst2)
    return check


# --- Python versions --------------------------------------------------------------------

COMPAT_PROBE = r"""
import json, sys, warnings, asyncio
warnings.simplefilter("always")
out = {"python": sys.version.split()[0]}
def probe(name, fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = fn()
            status = "ok" if value is None else value
        except BaseException as exc:
            status = f"{type(exc).__name__}: {exc}"
    dep = sorted({str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)})
    out[name] = {"status": status, "deprecations": dep}
def ours():
    from ctiserver.asterisk.ami.codec import FrameParser
    import ctiserver.asterisk.ami.client, ctiserver.asterisk.agi.server
    m = FrameParser().feed(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\nA: 1\r\n\r\n")
    assert m[0].headers == {"Event": "X", "A": "1"}
def pyst2_manager():
    import asterisk.manager
    m = asterisk.manager.Manager(); m.connected(); m.close = lambda: None
def pyst2_fastagi():
    import asterisk.fastagi
def panoramisk_manager():
    import panoramisk
    async def main():
        panoramisk.Manager(loop=asyncio.get_running_loop())
        panoramisk.actions.Action({"Action": "Ping"})
    asyncio.run(main())
def panoramisk_fastagi():
    from panoramisk.fast_agi import Application
    async def main():
        Application().add_route("x", lambda request: None)
    asyncio.run(main())
probe("ours", ours)
probe("pyst2 manager", pyst2_manager)
probe("pyst2 fastagi", pyst2_fastagi)
probe("panoramisk manager", panoramisk_manager)
probe("panoramisk fastagi (plain handler)", panoramisk_fastagi)
print(json.dumps(out))
"""


def interpreters(extra: list[str]) -> list[str]:
    """This interpreter, then CPython 3.12 and 3.13 if installed (PATH or pyenv)."""
    found = [sys.executable]
    candidates = [*extra]
    for minor in ("3.12", "3.13"):
        candidates.append(shutil.which(f"python{minor}") or "")
        candidates.extend(
            str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{minor}*/bin/python{minor}"))
        )
    seen_versions = {platform.python_version()}
    for path in candidates:
        if not path or path in found:
            continue
        probe = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        version = probe.stdout.strip()
        if probe.returncode == 0 and version not in seen_versions:
            seen_versions.add(version)
            found.append(path)
    return found


def check_pythons(extra: list[str]) -> list[dict[str, Any]]:
    """Run COMPAT_PROBE under each interpreter, with this venv's panoramisk,
    pyst2 (asterisk) and six on its path (all pure Python)."""
    import asterisk
    import panoramisk
    import six  # type: ignore[import-untyped]

    reports = []
    with tempfile.TemporaryDirectory() as shim:
        for module in (panoramisk, asterisk):
            os.symlink(Path(module.__file__).parent, Path(shim) / Path(module.__file__).parent.name)
        os.symlink(six.__file__, Path(shim) / "six.py")
        env = dict(
            os.environ, PYTHONPATH=f"{shim}{os.pathsep}{Path(__file__).resolve().parents[1]}"
        )
        for python in interpreters(extra):
            proc = subprocess.run(
                [python, "-c", COMPAT_PROBE],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            try:
                reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, json.JSONDecodeError):
                reports.append({"python": python, "error": proc.stderr.strip()[-200:]})
    return reports


# --- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Library correctness on the Asterisk transcripts.")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        help="another interpreter for the import/deprecation probe",
    )
    parser.add_argument("--no-python-probe", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)

    started = time.perf_counter()
    checks = [
        check_ami_framing(),
        check_utf8(),
        check_event_list(),
        check_originate_event(),
        check_userevent(),
        check_sync_originate(),
    ]
    hangup, dead = check_agi_hangup()
    checks += [hangup, dead, check_agi_timeout(), check_fastagi_server()]

    print(
        f"Library correctness on the Asterisk 22 transcripts - Python {platform.python_version()}"
    )
    print("ours = ctiserver codec + AmiClient + FastAgiServer; panoramisk 1.4; pyst2 0.5.1\n")
    for check in checks:
        print(check.name)
        for lib in LIBS:
            verdict = check.verdicts[lib]
            print(f"  {lib:<11} {verdict.status:<7} {verdict.detail}")
    totals = {lib: sum(1 for c in checks if c.verdicts[lib].status == PASS) for lib in LIBS}
    print("\npassed: " + ", ".join(f"{lib} {totals[lib]}/{len(checks)}" for lib in LIBS))

    pythons: list[dict[str, Any]] = []
    if not args.no_python_probe:
        print("\nimports and deprecations per interpreter:")
        pythons = check_pythons(args.python)
        for report in pythons:
            print(f"  Python {report.get('python')}")
            for name, value in report.items():
                if isinstance(value, dict):
                    deps = "; ".join(value["deprecations"])
                    print(
                        f"    {name:<36} {value['status'][:70]}"
                        + (f"  [{deps[:90]}]" if deps else "")
                    )
                elif name == "error":
                    print(f"    error: {value}")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    summary = {
        "python": platform.python_version(),
        "passed": totals,
        "checks": {c.name: {lib: c.verdicts[lib].status for lib in LIBS} for c in checks},
        "details": {c.name: {lib: c.verdicts[lib].detail for lib in LIBS} for c in checks},
        "pythons": pythons,
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
