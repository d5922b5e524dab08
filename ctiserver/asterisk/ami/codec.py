"""AMI wire codec: bytes from Asterisk -> Message objects, and actions -> bytes.

AMI frames are `Key: value` lines ending in CRLF, a frame ends with an empty
line. Asterisk 22 (AMI 11) sends the banner `Asterisk Call Manager/11.0.0\\r\\n`
as a single line before the first frame. The parser is incremental: feed it
whatever a read returned (half a frame, many frames) and it yields the complete
messages; a malformed frame is reported and skipped, the stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

log = logging.getLogger(__name__)

FRAME_END = b"\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
# A frame larger than this with no terminator is junk (or a hostile peer):
# drop it rather than buffer without bound.
MAX_FRAME_BYTES = 1 << 20
# The legacy (pre-AMI 2) Command output terminator, and the only headers such
# a `Response: Follows` frame has before its output lines.
_END_COMMAND = "--END COMMAND--"
_FOLLOWS_HEADERS = frozenset({"Response", "Privilege", "ActionID", "Message"})


class Message:
    """One AMI frame: an ordered set of headers.

    `headers` holds the first value of each header name as received. Headers
    that repeat (`Output:` of Command, `Variable:` of Status, `ChanVariable:`)
    keep every value in order, available through `values()`.
    Header names are case-sensitive on the wire, but Asterisk is inconsistent
    (`BridgeId`/`BridgeID`, `CommandID`/`CommandId`), so `get()` falls back to
    a case-insensitive match.

    A message read off the wire keeps its frame text and splits it into
    headers on first use: the client routes on `event` (read from the first
    line), so frames nobody subscribed to are never split at all.
    """

    __slots__ = ("_folded", "_headers", "_raw", "_repeated")

    def __init__(
        self,
        headers: dict[str, str],
        repeated: list[tuple[str, str]] | None = None,
    ) -> None:
        self._headers: dict[str, str] | None = headers
        self._repeated = repeated
        self._raw: str | None = None
        self._folded: dict[str, str] | None = None

    @classmethod
    def from_frame(cls, frame: str) -> Message:
        """A message over one frame's text (no final empty line), split lazily.

        Raises MalformedFrame at once if the first line is not a header, so a
        junk frame never reaches a subscriber; the other lines are checked on
        first access to the headers.
        """
        separator = frame.find(": ")
        if separator < 0 or frame.find("\r\n", 0, separator) >= 0:
            parse_frame(frame)  # raises with the precise reason
        message = cls.__new__(cls)
        message._headers = None
        message._repeated = None
        message._raw = frame
        message._folded = None
        return message

    @property
    def headers(self) -> dict[str, str]:
        headers = self._headers
        if headers is None:
            headers = _split_simple(self._raw or "")
            if headers is None:
                return self._split()
            self._headers = headers
        return headers

    @property
    def repeated(self) -> list[tuple[str, str]] | None:
        if self._headers is None:
            self._split()
        return self._repeated

    def _split(self) -> dict[str, str]:
        # The first line was sound (checked on arrival): keep every header
        # that parses rather than lose the frame, and say what was dropped.
        raw = self._raw or ""
        skipped: list[str] = []
        headers, self._repeated = split_headers(raw, skipped=skipped)
        self._headers = headers
        if skipped:
            log.warning("AMI frame with lines that are not headers %r: %r", skipped, raw[:200])
        return headers

    @property
    def event(self) -> str | None:
        """The `Event:` name, or None for a response."""
        raw = self._raw
        if raw is not None and self._headers is None:
            # The first line decides; Asterisk always puts Event/Response first.
            if raw.startswith("Event: "):
                end = raw.find("\r\n")
                return raw[7:] if end < 0 else raw[7:end]
            if raw.startswith("Response: "):
                return None
        return self.headers.get("Event")

    @property
    def response(self) -> str | None:
        """The `Response:` header: the status of a response (Success, Error,
        Goodbye, Follows), and also present on some events (OriginateResponse)."""
        raw = self._raw
        if raw is not None and self._headers is None:
            return _lazy_header(raw, "Response: ", "\r\nResponse: ")
        return self.headers.get("Response")

    @property
    def action_id(self) -> str | None:
        raw = self._raw
        if raw is not None and self._headers is None:
            return _lazy_header(raw, "ActionID: ", "\r\nActionID: ")
        return self.headers.get("ActionID")

    def get(self, name: str, default: str | None = None) -> str | None:
        """Header value by name; an exact match first, then ignoring case."""
        headers = self.headers
        value = headers.get(name)
        if value is not None:
            return value
        if self._folded is None:
            self._folded = {k.lower(): v for k, v in headers.items()}
        return self._folded.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def values(self, name: str) -> list[str]:
        """Every value of a header that may repeat, in the order received."""
        lowered = name.lower()
        found = [v for k, v in self.headers.items() if k.lower() == lowered]
        if self.repeated:
            found.extend(v for k, v in self.repeated if k.lower() == lowered)
        return found

    def items(self) -> Iterator[tuple[str, str]]:
        """All headers, the repeated ones after the first values."""
        yield from self.headers.items()
        if self.repeated:
            yield from self.repeated

    def variables(self, header: str = "Variable") -> dict[str, str]:
        """`NAME=value` headers (Status `Variable:`, `ChanVariable:`) as a dict."""
        result: dict[str, str] = {}
        for item in self.values(header):
            name, _, value = item.partition("=")
            result[name] = value
        return result

    def __repr__(self) -> str:
        kind = f"Event: {self.event}" if self.event else f"Response: {self.response}"
        return f"<ami.Message {kind} {len(self.headers)} headers>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.headers == other.headers and (self.repeated or []) == (other.repeated or [])

    __hash__ = None  # type: ignore[assignment]


def _lazy_header(raw: str, prefix: str, needle: str) -> str | None:
    """One header's value from an unsplit frame; `prefix` is `Name: `, `needle`
    the same after a line break (passed in: building it costs on a hot path).

    A value can never contain a line break, so the needle (or the prefix at
    the frame's start) marks exactly that header's line.
    """
    if raw.startswith(prefix):
        start = len(prefix)
    else:
        start = raw.find(needle)
        if start < 0:
            return None
        start += len(needle)
    end = raw.find("\r\n", start)
    return raw[start:] if end < 0 else raw[start:end]


class MalformedFrame(ValueError):
    """A frame that is not a sequence of `Key: value` lines."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {raw[:200]!r}")
        self.reason = reason
        self.raw = raw


def parse_frame(text: str) -> Message:
    """Parse one frame's text (without the final empty line) into a Message, eagerly."""
    headers, repeated = split_headers(text)
    return Message(headers, repeated)


def split_headers(
    text: str, *, skipped: list[str] | None = None
) -> tuple[dict[str, str], list[tuple[str, str]] | None]:
    """Split a frame's text into first values and repeated headers.

    A line that is not a header raises MalformedFrame, unless `skipped` is
    given: then it is appended there and the rest of the frame is kept.
    """
    fast = _split_simple(text)
    if fast is not None:
        return fast, None
    headers: dict[str, str] = {}
    repeated: list[tuple[str, str]] | None = None
    output: list[str] | None = None
    for line in text.split("\r\n"):
        if output is not None:
            # Inside legacy Command output every line is text, colon or not.
            if line != _END_COMMAND:
                output.append(line)
            continue
        key, sep, value = line.partition(": ")
        if headers.get("Response") == "Follows" and key not in _FOLLOWS_HEADERS:
            # Legacy output starts after the frame's own headers, and its
            # lines may look like headers themselves (`Uptime: 1 day: 2 hours`).
            output = [] if line == _END_COMMAND else [line]
            continue
        if not sep:
            # `Key:` with an empty value and no space, or a legacy
            # `Response: Follows` output line that is not a header at all.
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key:
                if skipped is None:
                    raise MalformedFrame("line without a header name", line.encode())
                skipped.append(line)
                continue
        if key in headers:
            if repeated is None:
                repeated = []
            repeated.append((key, value))
        else:
            headers[key] = value
    if not headers:
        raise MalformedFrame("empty frame", text.encode())
    if output is not None:
        # Legacy Command output: present it like AMI 11 does, as Output headers.
        first, *rest = output or [""]
        if "Output" not in headers:
            headers["Output"] = first
        else:
            rest = output
        if rest:
            repeated = (repeated or []) + [("Output", line) for line in rest]
    return headers, repeated


class FrameParser:
    """Incremental AMI parser: `feed(bytes)` returns the messages completed so far.

    The first line of a connection is the banner; it is not a frame and is
    exposed as `banner` once read. Malformed frames are logged, counted in
    `malformed` (the last one in `last_error`) and skipped.
    """

    __slots__ = ("_buffer", "_discarding", "_expect_banner", "banner", "last_error", "malformed")

    def __init__(self, expect_banner: bool = True) -> None:
        self._buffer = b""
        self._expect_banner = expect_banner
        # After an over-long frame was dropped: skip up to its real end, so
        # its tail never surfaces as a frame of its own.
        self._discarding = False
        self.banner: str | None = None
        self.malformed = 0
        self.last_error: MalformedFrame | None = None

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer + data if self._buffer else data
        if self._discarding:
            end = buffer.find(FRAME_END)
            if end < 0:
                self._buffer = buffer[-3:]  # a terminator may straddle reads
                return []
            buffer = buffer[end + 4 :]
            self._discarding = False
        if self._expect_banner:
            end = buffer.find(b"\r\n")
            if end < 0:
                self._buffer = self._bounded(buffer)
                return []
            self.banner = buffer[:end].decode("utf-8", "replace")
            self._expect_banner = False
            buffer = buffer[end + 2 :]
            if not self.banner.startswith(BANNER_PREFIX):
                log.warning("unexpected AMI banner %r", self.banner)
        last = buffer.rfind(FRAME_END)
        if last < 0:
            self._buffer = self._bounded(buffer)
            return []
        self._buffer = buffer[last + 4 :]
        # One decode for the whole run of frames, then split: far cheaper
        # than decoding frame by frame. Invalid UTF-8 is replaced, not fatal.
        text = buffer[:last].decode("utf-8", "replace")
        messages: list[Message] = []
        append = messages.append
        new = Message.__new__
        for frame in text.split("\r\n\r\n"):
            # Stray empty lines between frames are not frames (str.strip
            # returns the same object when there is nothing to strip).
            frame = frame.strip("\r\n")
            if len(frame) > MAX_FRAME_BYTES:
                self._report(MalformedFrame(f"frame over {MAX_FRAME_BYTES} bytes", frame.encode()))
                continue
            # Message.from_frame() inlined for the common case, a first line
            # `Key: value` (saves ~20% of the per-frame cost when headers are
            # not split); anything else takes the checked path.
            separator = frame.find(": ")
            if separator < 0 or frame.find("\r\n", 0, separator) >= 0:
                if not frame:
                    continue
                try:
                    append(Message.from_frame(frame))
                except MalformedFrame as exc:
                    self._report(exc)
                continue
            message = new(Message)
            message._headers = None
            message._repeated = None
            message._raw = frame
            message._folded = None
            append(message)
        return messages

    def _bounded(self, buffer: bytes) -> bytes:
        if len(buffer) <= MAX_FRAME_BYTES:
            return buffer
        self._report(MalformedFrame(f"frame over {MAX_FRAME_BYTES} bytes", buffer))
        self._discarding = True
        return b""

    def _report(self, exc: MalformedFrame) -> None:
        self.malformed += 1
        self.last_error = exc
        log.warning("skipping malformed AMI frame (%s): %r", exc.reason, exc.raw[:200])


def _split_simple(frame: str) -> dict[str, str] | None:
    """The fast path: every line `Key: value` and no key twice, else None.

    One partition per line is exact; cleverer whole-frame splits (turning
    line breaks into the separator) were ~20% faster but mis-split a frame
    holding both a value with `: ` in it and a line without one. Anything
    unusual (repeats, `Key:` lines, legacy output, junk) goes to split_headers.
    """
    headers: dict[str, str] = {}
    lines = frame.split("\r\n")
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            return None
        headers[key] = value
    # Fewer keys than lines: a key repeated (cheaper to see here than per line).
    return headers if len(headers) == len(lines) else None


def encode_action(
    action: str,
    headers: Mapping[str, str | Iterable[str]] | None = None,
    action_id: str | None = None,
) -> bytes:
    """Serialise an action. A header given an iterable of values is repeated
    (Originate's `Variable:`). CR/LF anywhere (action name, ActionID, keys,
    values) would split the frame and inject headers, so it is refused."""
    pairs = [("Action", action)]
    if action_id is not None:
        pairs.append(("ActionID", action_id))
    for key, value in (headers or {}).items():
        pairs.extend((key, item) for item in ([value] if isinstance(value, str) else value))
    lines = []
    for key, item in pairs:
        if "\r" in item or "\n" in item or "\r" in key or "\n" in key:
            raise ValueError(f"AMI header {key!r} contains a line break: {item!r}")
        lines.append(f"{key}: {item}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def encode_message(items: Iterable[tuple[str, str]]) -> bytes:
    """Serialise a frame from ordered header pairs (responses and events)."""
    return ("".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n").encode("utf-8")
