"""AMI event values as Asterisk 22 writes them: one event, its privilege, its bytes.

An `Event` is built once by the PBX model and shared by every AMI session:
the frame text is rendered on first use and cached, so publishing to many
sessions costs one string join. Header names and their order are copied
from the recorded transcripts (shared/asterisk/scenarios), including the
inconsistent ones (`BridgeId` vs `BridgeID`, `CommandId`).
"""

from __future__ import annotations

from collections.abc import Sequence

Headers = list[tuple[str, str]]

# Channel states (AST_STATE_*), as numbers and ChannelStateDesc.
DOWN = 0
RSRVD = 1
OFFHOOK = 2
DIALING = 3
RING = 4
RINGING = 5
UP = 6
BUSY = 7
STATE_DESC = {
    DOWN: "Down",
    RSRVD: "Rsrvd",
    OFFHOOK: "OffHook",
    DIALING: "Dialing",
    RING: "Ring",
    RINGING: "Ringing",
    UP: "Up",
    BUSY: "Busy",
}

# Hangup causes (ast_cause2str) that a contact center meets.
CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    22: "Number changed",
    27: "Destination out of order",
    28: "Invalid number format",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    44: "Requested channel not available",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# Privilege strings (the class list Asterisk prints, always ending in ",all").
CALL = "call,all"
DIALPLAN = "dialplan,all"
AGI = "agi,all"
DTMF = "dtmf,all"
USER = "user,all"
SYSTEM = "system,all"
SECURITY = "security,all"
REPORTING = "reporting,all"


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


class Event:
    """One published AMI event (`Event:`, `Privilege:`, `Timestamp:`, then headers)."""

    __slots__ = ("_frame", "_text", "classes", "headers", "name", "privilege", "timestamp")

    def __init__(
        self, name: str, privilege: str, headers: Headers, timestamp: float | None
    ) -> None:
        self.name = name
        self.privilege = privilege
        self.headers = headers
        self.timestamp = timestamp
        # "call,all" -> {"call"}; "all" is the catch-all every read=all user has.
        self.classes = frozenset(c for c in privilege.split(",") if c != "all")
        self._text: str | None = None
        self._frame: bytes | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    @property
    def text(self) -> str:
        """The whole frame as text (what a legacy `Filter:` regex is matched against)."""
        if self._text is None:
            lines = [f"Event: {self.name}", f"Privilege: {self.privilege}"]
            if self.timestamp is not None:
                lines.append(f"Timestamp: {self.timestamp:.6f}")
            lines.extend(f"{k}: {v}" for k, v in self.headers)
            self._text = "\r\n".join(lines) + "\r\n\r\n"
        return self._text

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = self.text.encode("utf-8")
        return self._frame

    def __repr__(self) -> str:
        return f"<Event {self.name} {self.headers[:1]}>"


def encode_frame(items: Sequence[tuple[str, str]]) -> bytes:
    """A response or list item frame from ordered header pairs."""
    return ("".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n").encode("utf-8")
