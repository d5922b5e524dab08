"""AMI ingest benchmark: our codec vs panoramisk vs pyst2 on the same bytes.

The stream is the recorded Asterisk 22 AMI traffic of scenario 14 (20 calls,
1684 events, 769,510 bytes), its frames repeated until the event budget is
reached, the banner once at the start. Every parser gets the same bytes in
socket-read-sized chunks (--chunk), pinned to one CPU, timed with
time.perf_counter(). The event budget is fed as --repeat runs of equal size,
each through a fresh parser, and the fastest run is reported.

Parsers:
  ours full      FrameParser.feed() + every header of every message
                 materialised (Message.headers), like panoramisk's dict.
  ours dispatch  what the AMI client does: route by the Event name (read from
                 the first line only) and the ActionID (a search of the frame
                 text), and materialise headers only for the events a CTI
                 server subscribes to (SUBSCRIBED below).
  panoramisk     AMIProtocol.data_received() -> Message.from_line() ->
                 handle_message() -> factory.dispatch(), with the encoding
                 the panoramisk Manager sets (utf8); the factory is a stub
                 that counts events. No network, no event loop needed.
  pyst2 parse    Manager._receive_data() (its framing) + ManagerMsg() +
                 Event() (its parsing), single-threaded: the socket file is an
                 in-memory BufferedReader whose raw reads return --chunk bytes,
                 and the message queue is a stub that runs what message_loop()
                 does with each frame. This is pyst2's parsing cost without
                 its per-byte socket reads and thread hand-offs.
  pyst2 socket   the unmodified library as deployed: Manager.connect() to a
                 loopback TCP server that writes the stream, its three
                 threads, an event callback counting events. Its socket file
                 is unbuffered (makefile(buffering=0)), so readline() issues
                 one recv() per byte; this is slow and runs on a small budget.

The last line printed is JSON (ours_events_per_s is the FULL-parse figure).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyst2_driver import collect_pyst2, pyst2_manager  # beside this script

from ctiserver.asterisk.ami.codec import FrameParser
from ctiserver.sim.transcript import incoming_ami_bytes, scenario

# Events a CTI server routes to its call/agent state machines; everything
# else (AGIExec*, VarSet, Newexten, CEL, Cdr, RTCP*, DTMFBegin, ...) is only
# classified by name and dropped.
SUBSCRIBED = frozenset(
    {
        "Newchannel",
        "Newstate",
        "Hangup",
        "HangupRequest",
        "SoftHangupRequest",
        "DialBegin",
        "DialEnd",
        "BridgeEnter",
        "BridgeLeave",
        "BridgeCreate",
        "BridgeDestroy",
        "Hold",
        "Unhold",
        "BlindTransfer",
        "AttendedTransfer",
        "OriginateResponse",
        "DeviceStateChange",
        "UserEvent",
        "MusicOnHoldStart",
        "MusicOnHoldStop",
        "DTMFEnd",
    }
)

UTF8_FRAME = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/pstn-000000ff\r\n"
    "ChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: 5551234\r\n"
    "CallerIDName: 王小明\r\nUniqueid: 1795417999.1\r\n\r\n"
).encode()


@dataclass
class Corpus:
    banner: bytes
    body: bytes  # one period: every incoming frame after the banner
    period_events: int
    period_messages: int
    period_subscribed: int  # events of a SUBSCRIBED type

    def stream(self, periods: int) -> bytes:
        return self.banner + self.body * periods


@dataclass
class Run:
    events: int
    messages: int  # -1 where the library does not expose responses
    seconds: float


def load_corpus(name: str) -> Corpus:
    frames = list(incoming_ami_bytes(scenario(name).ami()))
    banner, body = frames[0], frames[1:]
    names = [f.split(b"\r\n", 1)[0][7:].decode() for f in body if f.startswith(b"Event: ")]
    subscribed = sum(1 for name in names if name in SUBSCRIBED)
    return Corpus(banner, b"".join(body), len(names), len(body), subscribed)


def chunks(stream: bytes, size: int) -> Iterator[bytes]:
    # Slicing allocates a fresh bytes object per read, as socket.recv() does.
    for offset in range(0, len(stream), size):
        yield stream[offset : offset + size]


# --- parsers ----------------------------------------------------------------


def run_ours_full(stream: bytes, chunk: int) -> Run:
    parser = FrameParser()
    feed = parser.feed
    events = messages = 0
    start = time.perf_counter()
    for data in chunks(stream, chunk):
        for message in feed(data):
            headers = message.headers
            messages += 1
            if "Event" in headers:
                events += 1
    seconds = time.perf_counter() - start
    return Run(events, messages, seconds)


def run_ours_dispatch(stream: bytes, chunk: int) -> Run:
    parser = FrameParser()
    feed = parser.feed
    subscribed = SUBSCRIBED
    events = messages = 0
    start = time.perf_counter()
    # As AmiClient._route() does: the Event name from the first line, the
    # ActionID (list items and OriginateResponse carry one) by a search of the
    # frame text, the headers only for subscribed events. The client's asyncio
    # queue hop to its subscribers is not part of this figure.
    for data in chunks(stream, chunk):
        for message in feed(data):
            messages += 1
            name = message.event
            message.action_id  # noqa: B018
            if name is not None:
                events += 1
                if name in subscribed:
                    message.headers  # noqa: B018
    seconds = time.perf_counter() - start
    return Run(events, messages, seconds)


class _PanoramiskFactory:
    """The bits of panoramisk.Manager that AMIProtocol calls for events."""

    save_stream = None

    def __init__(self) -> None:
        self.events = 0

    def dispatch(self, message: Any) -> None:
        self.events += 1


def _panoramisk_protocol(encoding: str = "utf8") -> tuple[Any, _PanoramiskFactory]:
    from panoramisk.ami_protocol import AMIProtocol

    protocol = AMIProtocol()
    protocol.connection_made(None)  # only stores attributes; no I/O
    factory = _PanoramiskFactory()
    protocol.factory = factory
    protocol.encoding = encoding  # what panoramisk.Manager.connection_made sets
    return protocol, factory


def run_panoramisk(stream: bytes, chunk: int) -> Run:
    protocol, factory = _panoramisk_protocol()
    data_received = protocol.data_received
    start = time.perf_counter()
    for data in chunks(stream, chunk):
        data_received(data)
    seconds = time.perf_counter() - start
    return Run(factory.events, -1, seconds)


class _Pyst2Queue:
    """Stands in for Manager._message_queue: does what message_loop() does."""

    def __init__(self) -> None:
        import asterisk.manager as manager

        self._manager = manager
        self.events = 0
        self.messages = 0

    def put(self, data: list[str] | None) -> None:
        if not data:
            return
        manager = self._manager
        message = manager.ManagerMsg(data)
        self.messages += 1
        if message.has_header("Event"):
            manager.Event(message)
            self.events += 1


def run_pyst2_parse(stream: bytes, chunk: int) -> Run:
    queue = _Pyst2Queue()
    mgr = pyst2_manager(chunks(stream, chunk), queue, buffer_size=chunk)
    start = time.perf_counter()
    mgr._receive_data()  # returns at EOF
    seconds = time.perf_counter() - start
    # The banner becomes a fake "Response: Generated Header" message.
    return Run(queue.events, queue.messages - 1, seconds)


def run_pyst2_socket(stream: bytes, chunk: int, expected_events: int) -> Run:
    import asterisk.manager as manager

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):
            for data in chunks(stream, chunk):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # until the client goes away

    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    count = 0
    finished = 0.0
    done = threading.Event()

    def on_event(event: Any, mgr: Any) -> None:
        nonlocal count, finished
        count += 1
        if count == expected_events:
            finished = time.perf_counter()
            done.set()

    mgr = manager.Manager()
    mgr.register_event("*", on_event)
    start = time.perf_counter()
    mgr.connect("127.0.0.1", port)
    done.wait(timeout=600)
    seconds = (finished or time.perf_counter()) - start
    # The stream ends with EOF: pyst2's reader thread stops, close() joins the rest.
    mgr.close()
    writer.join(5)
    server.close()
    return Run(count, -1, seconds)


# --- correctness --------------------------------------------------------------


def _collect_ours(stream: bytes, chunk: int) -> list[dict[str, Any]]:
    parser = FrameParser()
    out: list[dict[str, Any]] = []
    for data in chunks(stream, chunk):
        for message in parser.feed(data):
            headers: dict[str, Any] = dict(message.headers)
            for key, value in message.repeated or []:
                first = headers[key]
                headers[key] = [*first, value] if isinstance(first, list) else [first, value]
            out.append(headers)
    return out


def _collect_panoramisk(stream: bytes, chunk: int, encoding: str) -> list[dict[str, Any]]:
    protocol, _ = _panoramisk_protocol(encoding)
    out: list[dict[str, Any]] = []
    # Every parsed message, responses included (the library drops responses
    # nobody waits for inside handle_message).
    protocol.handle_message = lambda message: out.append(dict(message.items()))
    for data in chunks(stream, chunk):
        protocol.data_received(data)
    return out


def _collect_panoramisk_headers(stream: bytes, chunk: int, encoding: str) -> list[dict[str, Any]]:
    # panoramisk stores a message's body (`content`, '' for every AMI 11 frame)
    # as one more header; leave it out of the comparison.
    out = _collect_panoramisk(stream, chunk, encoding)
    for headers in out:
        if headers.get("content") == "":
            del headers["content"]
    return out


def check_correctness(corpus: Corpus, chunk: int) -> tuple[list[str], dict[str, Any]]:
    """Parse one copy + a UTF-8 frame with every parser, compare with ours."""
    lines: list[str] = []
    stream = corpus.banner + corpus.body + UTF8_FRAME
    ours = _collect_ours(stream, chunk)
    results = {
        "panoramisk (encoding utf8, as its Manager sets)": _collect_panoramisk_headers(
            stream, chunk, "utf8"
        ),
        "panoramisk (AMIProtocol default ascii)": _collect_panoramisk_headers(
            stream, chunk, "ascii"
        ),
        "pyst2": collect_pyst2(chunks(stream, chunk), buffer_size=chunk),
    }
    summary: dict[str, Any] = {"sample_messages": len(ours)}
    lines.append(f"ours: {len(ours)} messages, CallerIDName={ours[-1].get('CallerIDName')!r}")
    for name, theirs in results.items():
        same = sum(1 for a, b in zip(ours, theirs, strict=False) if a == b)
        differing: dict[str, int] = {}
        example: dict[str, str] = {}
        for a, b in zip(ours, theirs, strict=False):
            for key in set(a) | set(b):
                va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
                if va != vb:
                    differing[key] = differing.get(key, 0) + 1
                    example.setdefault(key, f"{key}: {va!r} -> {vb!r}")
        lines.append(
            f"{name}: {len(theirs)} messages, {same} with headers identical to ours, "
            f"CallerIDName={theirs[-1].get('CallerIDName', '<missing>')!r}"
        )
        for key, count in sorted(differing.items(), key=lambda kv: (-kv[1], kv[0]))[:6]:
            lines.append(f"    {count:>4} differ: {example[key][:100]}")
        label = "panoramisk_ascii" if "ascii" in name else name.split(" ")[0]
        summary[label] = {"messages": len(theirs), "identical": same}
    return lines, summary


# --- memory -------------------------------------------------------------------


def peak_memory(runner: Callable[[bytes, int], Run], stream: bytes, chunk: int) -> int:
    """tracemalloc peak while streaming (messages are dropped once handled)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    runner(stream, chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# --- main -----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    runs: list[Run]
    expected_events: int  # per run
    peak_bytes: int | None = None

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def best_rate(self) -> float:
        return self.best.events / self.best.seconds

    @property
    def overall_rate(self) -> float:
        return sum(r.events for r in self.runs) / sum(r.seconds for r in self.runs)

    @property
    def counts_ok(self) -> bool:
        return all(r.events == self.expected_events for r in self.runs)


def pin_cpu(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    target = allowed[0] if cpu is None else cpu
    os.sched_setaffinity(0, {target})
    return f"pinned to CPU {target} (of {len(allowed)} allowed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="AMI ingest benchmark: ours vs panoramisk vs pyst2 on recorded traffic."
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="event budget for ours and panoramisk (default 1,000,000)",
    )
    parser.add_argument(
        "--chunk", type=int, default=65536, help="bytes per socket read (default 65536)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs each budget is split into, fastest counts (default 3)",
    )
    parser.add_argument(
        "--pyst2-events",
        type=int,
        default=100_000,
        help="event budget for pyst2 parse, 0 to skip (default 100,000)",
    )
    parser.add_argument(
        "--pyst2-socket-events",
        type=int,
        default=3_000,
        help="event budget for pyst2 over loopback TCP, 0 to skip (default 3,000)",
    )
    parser.add_argument(
        "--scenario", default="14", help="transcript scenario to repeat (default 14)"
    )
    parser.add_argument(
        "--cpu", type=int, default=None, help="CPU to pin to (default: first allowed)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--no-check", action="store_true", help="skip the header comparison")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.chunk <= 0 or args.repeat <= 0:
        parser.error("--events, --chunk and --repeat must be positive")

    pinned = pin_cpu(args.cpu)
    corpus = load_corpus(args.scenario)

    repeat: int = args.repeat

    def periods_per_run(budget: int) -> int:
        return max(1, math.ceil(math.ceil(budget / corpus.period_events) / repeat))

    main_periods = periods_per_run(args.events)
    stream = corpus.stream(main_periods)
    per_run = main_periods * corpus.period_events
    print(f"AMI ingest benchmark - Python {platform.python_version()} ({sys.executable}), {pinned}")
    total_events = args.repeat * per_run
    total_mb = args.repeat * len(stream) / 1e6
    print(
        f"stream: scenario {args.scenario} ({corpus.period_events} events, "
        f"{corpus.period_messages} messages, {len(corpus.body):,} bytes per copy); "
        f"{args.repeat} runs x {main_periods} copies = {total_events:,} events "
        f"({total_mb:,.0f} MB) per parser; chunk {args.chunk} bytes"
    )
    share = corpus.period_subscribed / corpus.period_events
    print(
        f"dispatch materialises {corpus.period_subscribed} of {corpus.period_events} events "
        f"({share:.1%}), those of the {len(SUBSCRIBED)} subscribed types: "
        + ", ".join(sorted(SUBSCRIBED))
    )

    summary: dict[str, Any] = {}
    if not args.no_check:
        print("\ncorrectness (one copy of the stream + a UTF-8 frame, same chunking):")
        lines, summary = check_correctness(corpus, args.chunk)
        for line in lines:
            print("  " + line)

    results: dict[str, Result] = {
        "ours full": Result("ours full", [], per_run),
        "ours dispatch": Result("ours dispatch", [], per_run),
        "panoramisk": Result("panoramisk", [], per_run),
    }
    runners: dict[str, tuple[Callable[[bytes, int], Run], bytes]] = {
        "ours full": (run_ours_full, stream),
        "ours dispatch": (run_ours_dispatch, stream),
        "panoramisk": (run_panoramisk, stream),
    }
    if args.pyst2_events > 0:
        pyst2_periods = periods_per_run(args.pyst2_events)
        results["pyst2 parse"] = Result("pyst2 parse", [], pyst2_periods * corpus.period_events)
        runners["pyst2 parse"] = (run_pyst2_parse, corpus.stream(pyst2_periods))

    print("\ntiming", end="", flush=True)
    # Round-robin, so drift in clock speed hits every parser alike.
    for _ in range(args.repeat):
        for name, (runner, data) in runners.items():
            gc.collect()
            results[name].runs.append(runner(data, args.chunk))
            print(".", end="", flush=True)
    if args.pyst2_socket_events > 0:
        socket_periods = max(1, math.ceil(args.pyst2_socket_events / corpus.period_events))
        expected = socket_periods * corpus.period_events
        run = run_pyst2_socket(corpus.stream(socket_periods), args.chunk, expected)
        results["pyst2 socket"] = Result("pyst2 socket", [run], expected)
        print(".", end="", flush=True)
    print()

    if not args.no_memory:
        small = corpus.stream(3)
        memory_runners: dict[str, Callable[[bytes, int], Run]] = {
            "ours full": run_ours_full,
            "ours dispatch": run_ours_dispatch,
            "panoramisk": run_panoramisk,
            "pyst2 parse": run_pyst2_parse,
        }
        for name, runner in memory_runners.items():
            if name in results:
                results[name].peak_bytes = peak_memory(runner, small, args.chunk)

    panoramisk_rate = results["panoramisk"].best_rate
    header = (
        f"{'parser':<14} {'events/run':>11} {'runs':>4} {'best s':>7} {'best ev/s':>10} "
        f"{'all runs ev/s':>13} {'x pano':>6} {'peak MiB':>8} counts"
    )
    print("\n" + header)
    print("-" * len(header))
    for result in results.values():
        peak = f"{result.peak_bytes / 2**20:8.1f}" if result.peak_bytes is not None else f"{'-':>8}"
        print(
            f"{result.name:<14} {result.expected_events:>11,} {len(result.runs):>4} "
            f"{result.best.seconds:>7.2f} {result.best_rate:>10,.0f} {result.overall_rate:>13,.0f} "
            f"{result.best_rate / panoramisk_rate:>6.2f} {peak} "
            f"{'ok' if result.counts_ok else 'MISMATCH'}"
        )
    print(
        "\nevents/s = events delivered / wall time of feeding the chunks (perf_counter), one core; "
        "peak MiB = tracemalloc peak while streaming 3 copies (messages dropped once handled)."
    )
    if "pyst2 socket" in results:
        print(
            "pyst2 socket = unmodified Manager over loopback TCP (3 threads, unbuffered socket "
            "file: one recv() per byte), a single run."
        )

    ours = results["ours full"]
    report: dict[str, Any] = {
        "ours_events_per_s": round(ours.best_rate),
        "panoramisk_events_per_s": round(panoramisk_rate),
        "ratio": round(ours.best_rate / panoramisk_rate, 2),
        "ours_dispatch_events_per_s": round(results["ours dispatch"].best_rate),
        "dispatch_ratio": round(results["ours dispatch"].best_rate / panoramisk_rate, 2),
        "ours_overall_events_per_s": round(ours.overall_rate),
        "panoramisk_overall_events_per_s": round(results["panoramisk"].overall_rate),
        "events": args.repeat * per_run,
        "events_per_run": per_run,
        "repeat": args.repeat,
        "chunk": args.chunk,
        "scenario": args.scenario,
        "python": platform.python_version(),
        "counts_match": all(r.counts_ok for r in results.values()),
        "dispatch_subscribed": sorted(SUBSCRIBED),
        "dispatch_materialised_share": round(corpus.period_subscribed / corpus.period_events, 3),
    }
    if "pyst2 parse" in results:
        report["pyst2_events_per_s"] = round(results["pyst2 parse"].best_rate)
        report["pyst2_events"] = args.repeat * results["pyst2 parse"].expected_events
    if "pyst2 socket" in results:
        report["pyst2_socket_events_per_s"] = round(results["pyst2 socket"].best_rate)
        report["pyst2_socket_events"] = results["pyst2 socket"].expected_events
    for name, result in results.items():
        if result.peak_bytes is not None:
            report["peak_bytes_" + name.replace(" ", "_")] = result.peak_bytes
    if summary:
        report["check"] = summary
    print(json.dumps(report, ensure_ascii=False))
    return 0 if report["counts_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
