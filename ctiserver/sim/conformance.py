"""Compare what the emulator sent with what the real Asterisk sent (the transcripts).

Both sides go through the same normalisation:

- AMI frames become `(name, ((header, value), ...))` with every header kept in
  order, except values that legitimately differ between two runs: timestamps,
  Uniqueids (replaced by the role of their channel), bridge UUIDs, session ids,
  ports, CommandId, durations, RTP statistics, the SIP Call-IDs of
  BRIDGEPVTCALLID and the measured ANSWEREDTIME/DIALEDTIME/RINGTIME values.
- Channel names become roles: `PJSIP/agent1001-0000000e` -> `agent1001#1`
  (the first agent1001 channel of the capture), `Local/...;2` likewise.
- Event types the emulator does not model are dropped: CEL, Cdr, RTCPSent,
  RTCPReceived.

Asterisk publishes from many threads, so the interleaving of different
channels' events is not reproducible even between two real runs (04 and 09
differ). A capture is therefore compared as separate streams:
one per channel (its events in order), one per bridge, one per device
(DeviceStateChange is published asynchronously), the connection's responses
and list items in order, and the remaining channel-less events in order.

FastAGI dialogues are compared line by line; the environment block with
`agi_uniqueid`, `agi_threadid` and the channel counter normalised, and
`endpos=` of an interrupted playback (the point where the caller's DTMF or
BYE landed) normalised too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from ctiserver.sim.transcript import Record

NOT_MODELLED = frozenset({"CEL", "Cdr", "RTCPSent", "RTCPReceived"})
# Headers whose values vary from run to run (blanked, the header itself is kept).
VOLATILE_HEADERS = frozenset(
    {
        "Timestamp",
        "CommandId",
        "EventTV",
        "SessionTV",
        "SessionID",
        "RemoteAddress",
        "LocalAddress",
        "Uptime",
        "LastReload",
        "Challenge",
        "Duration",
        "Seconds",
        "CoreStartupDate",
        "CoreStartupTime",
        "CoreReloadDate",
        "CoreReloadTime",
        "CoreProcessedCalls",
        "ExpirationTime",
        "CallId",
        "ObjectName",
        "ViaPort",
        "URI",
        "Uri",
        "Key",
    }
)
# VarSet values that depend on timing or on SIP internals.
VOLATILE_VARIABLES = re.compile(
    r"^(RTPAUDIOQOS.*|BRIDGEPVTCALLID|ANSWEREDTIME(_MS)?|DIALEDTIME(_MS)?|RINGTIME(_MS)?|"
    r"PROGRESSTIME(_MS)?)$"
)
CHANNEL_NAME = re.compile(r"(?:PJSIP|Local|Surrogate/PJSIP)/[^\s,;|()\"<>]+?-[0-9a-f]{8}(?:;[12])?")
UNIQUEID = re.compile(r"\b\d{10}\.\d+\b")
BRIDGE_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
ENDPOS = re.compile(r" endpos=\d+")
FASTAGI_TARGET = re.compile(r"agi://[^/\s,]+")
UPTIME_OUTPUT = re.compile(r"^(System uptime|Last reload): .*$")

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Frame:
    """One AMI frame (or the banner, or the end of the connection) with its time."""

    t: float
    headers: tuple[tuple[str, str], ...]
    banner: str = ""
    eof: bool = False

    @property
    def name(self) -> str:
        return self.headers[0][1] if self.headers else ""

    @property
    def is_event(self) -> bool:
        return bool(self.headers) and self.headers[0][0] == "Event"

    def get(self, key: str) -> str | None:
        for k, v in self.headers:
            if k == key:
                return v
        return None


def parse_frame_text(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for line in text.rstrip("\r\n").split("\r\n"):
        if not line:
            continue
        key, _, value = line.partition(": ")
        if not _ and line.endswith(":"):
            key, value = line[:-1], ""
        pairs.append((key, value))
    return tuple(pairs)


def frames_from_records(records: Iterable[Record]) -> list[Frame]:
    """The frames Asterisk sent on one recorded AMI connection."""
    frames: list[Frame] = []
    for record in records:
        if not record.incoming:
            continue
        if record.eof:
            frames.append(Frame(record.t, (), eof=True))
        elif record.data.startswith("Asterisk Call Manager/"):
            frames.append(Frame(record.t, (), banner=record.data.strip()))
        elif record.data:
            frames.append(Frame(record.t, parse_frame_text(record.data)))
    return frames


class Roles:
    """Consistent names for channels, Uniqueids and bridges within one capture."""

    def __init__(self) -> None:
        self.channels: dict[str, str] = {}
        self.uniqueids: dict[str, str] = {}
        self.bridges: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def channel(self, name: str) -> str:
        found = self.channels.get(name)
        if found is None:
            base, _, suffix = name.partition(";")
            endpoint = base.rsplit("-", 1)[0]
            key = endpoint
            if suffix:
                sibling = self.channels.get(base + (";1" if suffix == "2" else ";2"))
                if sibling is not None:
                    found = sibling.rsplit(";", 1)[0] + ";" + suffix
            if found is None:
                count = self._counts.get(key, 0) + 1
                self._counts[key] = count
                found = f"{endpoint.split('/', 1)[-1]}#{count}" + (f";{suffix}" if suffix else "")
            self.channels[name] = found
        return found

    def uniqueid(self, value: str) -> str:
        return self.uniqueids.get(value, "<uid>")

    def bridge(self, value: str) -> str:
        found = self.bridges.get(value)
        if found is None:
            found = f"bridge#{len(self.bridges) + 1}"
            self.bridges[value] = found
        return found

    def text(self, value: str) -> str:
        """Replace channel names, Uniqueids and bridge ids inside free text."""
        value = CHANNEL_NAME.sub(lambda m: self.channel(m.group(0)), value)
        # The FastAGI server's address is configuration, not behaviour.
        value = FASTAGI_TARGET.sub("agi://<fastagi>", value)
        value = BRIDGE_ID.sub(lambda m: self.bridge(m.group(0)), value)
        return UNIQUEID.sub(lambda m: self.uniqueid(m.group(0)), value)


def _learn(roles: Roles, frame: Frame) -> None:
    """Bind Uniqueids to channel roles before normalising the frame's values."""
    channels: dict[str, str] = {}
    uniqueids: dict[str, str] = {}
    for key, value in frame.headers:
        if key.endswith("Channel"):
            channels[key[:-7]] = value
        elif key.endswith("Uniqueid"):
            uniqueids[key[:-8]] = value
    for prefix, channel in channels.items():
        uid = uniqueids.get(prefix)
        if uid and CHANNEL_NAME.fullmatch(channel):
            roles.uniqueids.setdefault(uid, roles.channel(channel))


def normalise_frame(roles: Roles, frame: Frame) -> Pairs:
    _learn(roles, frame)
    out: list[tuple[str, str]] = []
    variable = frame.get("Variable") or ""
    for key, value in frame.headers:
        if key in VOLATILE_HEADERS or (key == "Value" and VOLATILE_VARIABLES.match(variable)):
            value = "*"
        elif key.endswith(("Uniqueid", "Linkedid", "UniqueId")) and not key.startswith(
            ("Bridge", "ToBridge", "FromBridge", "OrigBridge", "SecondBridge", "DestBridge")
        ):
            value = roles.uniqueids.get(value, value if not UNIQUEID.fullmatch(value) else "<uid>")
        elif key == "Output":
            value = UPTIME_OUTPUT.sub(r"\1: *", value)
        elif key == "Env":
            value = _normalise_env(roles, unquote(value))
        elif key == "Result" and frame.name == "AsyncAGIExec":
            value = unquote(value)
            if not value.startswith("200 result=0 "):
                value = ENDPOS.sub(" endpos=*", value)
        else:
            value = roles.text(value)
        out.append((key, value))
    return tuple(out)


def _normalise_env(roles: Roles, env: str) -> str:
    lines = []
    for line in env.split("\n"):
        key, _, value = line.partition(": ")
        if key in ("agi_uniqueid", "agi_threadid"):
            value = "*"
        elif key == "agi_channel":
            value = roles.channel(value)
        lines.append(f"{key}: {value}" if _ or key else line)
    return "\n".join(lines)


@dataclass
class Comparable:
    """A capture split into streams that must match one by one."""

    streams: dict[str, list[Pairs]] = field(default_factory=dict)

    def add(self, key: str, item: Pairs) -> None:
        self.streams.setdefault(key, []).append(item)


LIST_EVENTS_UNORDERED = frozenset({"DeviceStateChange"})


def comparable(
    frames: Sequence[Frame],
    *,
    drop: Iterable[str] = (),
    ignore_headers: Iterable[tuple[str, str]] = (),
    ringing_race: bool = False,
) -> Comparable:
    """Normalise one AMI connection into streams (see the module docstring).

    drop: further event names to leave out. ignore_headers: (event, header)
    pairs whose value is not compared (documented deviations). ringing_race:
    Asterisk's dial thread may publish `DialState RINGING` before the callee's
    `Newstate Ringing` (07, 15) or after it (04, 05, ...); with this set the
    two are put in one order and DialState's Dest state is not compared.
    """
    dropped = NOT_MODELLED | frozenset(drop)
    ignored = frozenset(ignore_headers)
    roles = Roles()
    result = Comparable()
    unordered: dict[str, list[Pairs]] = {}
    for frame in frames:
        if frame.banner:
            result.add("connection", (("Banner", frame.banner),))
            continue
        if frame.eof:
            result.add("connection", (("EOF", ""),))
            continue
        name = frame.name
        if frame.is_event and name in dropped:
            continue
        pairs = normalise_frame(roles, frame)
        if ignored:
            pairs = tuple((k, "*" if (name, k) in ignored else v) for k, v in pairs)
        headers = dict(frame.headers)
        is_list_item = frame.is_event and "ActionID" in headers and "Privilege" not in headers
        if not frame.is_event or is_list_item:
            if is_list_item and name in LIST_EVENTS_UNORDERED:
                unordered.setdefault(headers.get("ActionID", ""), []).append(pairs)
                continue
            result.add("responses", pairs)
            continue
        if name.startswith("Bridge") and "BridgeUniqueid" in headers:
            result.add("bridge " + roles.bridge(headers["BridgeUniqueid"]), pairs)
            if "Channel" not in headers:
                continue
        if name == "DeviceStateChange":
            result.add("device " + headers.get("Device", ""), pairs)
            continue
        if headers.get("Privilege", "").startswith("security"):
            # Security events describe other connections' logins and errors: their
            # order against this connection's traffic is a race, compare as a set.
            unordered.setdefault("security", []).append(pairs)
            continue
        owner = None
        for key in ("Channel", "DestChannel", "SpyerChannel"):
            value = headers.get(key)
            if value and key + "StateDesc" in headers and CHANNEL_NAME.fullmatch(value):
                owner = roles.channel(value)
                break
        result.add(f"channel {owner}" if owner else "events", pairs)
    for key, items in unordered.items():
        result.streams[key if key == "security" else f"list {key}"] = sorted(items)
    if ringing_race:
        for key, stream in result.streams.items():
            if key.startswith("channel "):
                result.streams[key] = _ringing_order(stream)
    return result


def _ringing_order(stream: list[Pairs]) -> list[Pairs]:
    out: list[Pairs] = []
    for pairs in stream:
        name = pairs[0][1] if pairs else ""
        if name == "DialState":
            pairs = tuple(
                (k, "*" if k in ("DestChannelState", "DestChannelStateDesc") else v)
                for k, v in pairs
            )
        if (
            name == "Newstate"
            and dict(pairs).get("ChannelStateDesc") == "Ringing"
            and out
            and out[-1][0][1] == "DialState"
        ):
            out.insert(len(out) - 1, pairs)
            continue
        out.append(pairs)
    return out


@dataclass
class Mismatch:
    stream: str
    diff: str


def compare(expected: Comparable, actual: Comparable) -> list[Mismatch]:
    """Every stream that differs, with a unified diff (expected = transcript)."""
    problems: list[Mismatch] = []
    for key in sorted(set(expected.streams) | set(actual.streams)):
        want = [_show(p) for p in expected.streams.get(key, [])]
        got = [_show(p) for p in actual.streams.get(key, [])]
        if want != got:
            diff = "\n".join(
                difflib.unified_diff(want, got, "transcript", "emulator", lineterm="", n=2)
            )
            problems.append(Mismatch(key, diff))
    return problems


def _show(pairs: Pairs) -> str:
    return " | ".join(f"{k}={v}" for k, v in pairs)


def report(problems: Sequence[Mismatch], limit: int = 6000) -> str:
    text = "\n\n".join(f"== stream {p.stream}\n{p.diff}" for p in problems)
    return text if len(text) <= limit else text[:limit] + "\n... (truncated)"


# -- FastAGI -----------------------------------------------------------------------


def agi_lines(records: Iterable[Record]) -> list[str]:
    """What Asterisk wrote on one FastAGI connection, one item per line (+ <EOF>).

    The environment block keeps its terminating empty line.
    """
    lines: list[str] = []
    for record in records:
        if not record.incoming:
            continue
        if record.eof:
            lines.append("<EOF>")
        elif record.data.startswith("agi_"):
            lines.extend(record.data.split("\n")[:-1])
        else:
            lines.extend(record.data.rstrip("\n").split("\n"))
    return lines


def normalise_agi(lines: Sequence[str], *, interrupted_endpos: bool = True) -> list[str]:
    roles = Roles()
    out: list[str] = []
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep and key.startswith("agi_"):
            if key in ("agi_uniqueid", "agi_threadid"):
                value = "*"
            elif key == "agi_channel":
                value = roles.channel(value)
            else:
                value = FASTAGI_TARGET.sub("agi://<fastagi>", value)
            out.append(f"{key}: {value}")
            continue
        interrupted = line.startswith("200 result=") and not line.startswith("200 result=0 ")
        if interrupted_endpos and interrupted and " endpos=" in line:
            line = ENDPOS.sub(" endpos=*", line)
        out.append(line)
    return out


def compare_agi(expected: Sequence[str], actual: Sequence[str]) -> str:
    """An empty string when equal, else a unified diff."""
    want, got = normalise_agi(expected), normalise_agi(actual)
    if want == got:
        return ""
    return "\n".join(difflib.unified_diff(want, got, "transcript", "emulator", lineterm=""))
