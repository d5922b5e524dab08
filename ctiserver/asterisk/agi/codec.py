"""FastAGI wire codec: the `agi_*` environment block, command lines and result lines.

Asterisk writes LF-terminated lines. A session opens with `agi_name: value`
lines closed by an empty line; then every command gets one status line
(`200 result=... [(data)] [endpos=N]`), except a 520 usage error, which spans
several lines (`520-...` up to `520 End of proper usage.`). A `HANGUP` line may
arrive at any moment (the caller left, or the channel was redirected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

HANGUP_LINE = "HANGUP"
# 511 answers channel commands on a dead (hung up / redirected) channel.
DEAD_CHANNEL_CODE = 511
USAGE_ERROR_CODE = 520
INVALID_COMMAND_CODE = 510
_USAGE_END = f"{USAGE_ERROR_CODE} End of proper usage."


class AgiProtocolError(ValueError):
    """Bytes from Asterisk that are not FastAGI."""


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The `agi_*` variables Asterisk sends when a FastAGI session starts."""

    variables: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        """A variable by name, with or without the `agi_` prefix."""
        key = name if name.startswith("agi_") else f"agi_{name}"
        return self.variables.get(key, default)

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("callerid")

    @property
    def calleridname(self) -> str:
        return self.get("calleridname")

    @property
    def dnid(self) -> str:
        return self.get("dnid")

    @property
    def context(self) -> str:
        return self.get("context")

    @property
    def extension(self) -> str:
        return self.get("extension")

    @property
    def priority(self) -> str:
        return self.get("priority")

    @property
    def language(self) -> str:
        return self.get("language")

    @property
    def request(self) -> str:
        return self.get("request")

    @property
    def script(self) -> str:
        """The script path of the agi:// URL without query (`ivr` for agi://host/ivr?x=1)."""
        script = self.get("network_script")
        return script.partition("?")[0].strip("/")

    @property
    def arguments(self) -> dict[str, str]:
        """Query arguments of the agi:// URL (agi://host/flow?lang=zh -> {'lang': 'zh'}).

        Taken from `agi_request` (the full URL); the last value wins for a key
        given twice. Positional AGI(url,arg1,arg2) arguments are `agi_arg_N`.
        """
        query = urlsplit(self.request).query or self.get("network_script").partition("?")[2]
        return {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}

    @property
    def positional_arguments(self) -> list[str]:
        """`AGI(agi://..., a, b)` -> ['a', 'b'] (agi_arg_1, agi_arg_2, ...)."""
        found: list[str] = []
        index = 1
        while f"agi_arg_{index}" in self.variables:
            found.append(self.variables[f"agi_arg_{index}"])
            index += 1
        return found


def parse_environment(block: str) -> AgiEnvironment:
    """Parse the environment block (the lines before the first empty line)."""
    variables: dict[str, str] = {}
    for number, line in enumerate(block.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise AgiProtocolError(f"environment line {number} is not 'agi_name: value': {line!r}")
        variables[name] = value[1:] if value.startswith(" ") else value
    if "agi_channel" not in variables and "agi_request" not in variables:
        raise AgiProtocolError("environment block lacks agi_channel and agi_request")
    return AgiEnvironment(variables)


@dataclass(frozen=True, slots=True)
class AgiResponse:
    """One reply to a command.

    `result` is the text after `result=` (may be empty: GET DATA timeout);
    `data` the text in parentheses (a variable's value, `timeout`, a Dial
    status); `endpos` the sample offset STREAM FILE stopped at.
    For a 5xx reply, `result` is empty and `message` holds Asterisk's text
    (with the usage lines of a 520); on a 200 reply `message` is any free
    text after the fields (`Gosub complete`).
    """

    code: int
    result: str = ""
    data: str | None = None
    endpos: int | None = None
    message: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        """`result` as an integer, or None when empty (GET DATA timeout)."""
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


def parse_response(line: str) -> AgiResponse:
    """Parse a single-line reply such as `200 result=49 endpos=24000`.

    Raises AgiProtocolError for anything that is not `NNN ...`.
    """
    line = line.rstrip("\r\n")
    code_text, _, rest = line.partition(" ")
    if len(code_text) != 3 or not code_text.isdigit():
        raise AgiProtocolError(f"not an AGI reply line: {line!r}")
    code = int(code_text)
    if code != 200:
        return AgiResponse(code=code, message=rest)
    if not rest.startswith("result="):
        raise AgiProtocolError(f"200 reply without result=: {line!r}")
    rest = rest[7:]
    result, _, rest = rest.partition(" ")
    data: str | None = None
    if rest.startswith("("):
        # Data may contain spaces and parentheses: GET FULL VARIABLE of
        # `${CALLERID(num)}`; it ends at the last ')' followed by end or ' key='.
        close = _data_end(rest)
        data = rest[1:close]
        rest = rest[close + 1 :].lstrip(" ")
    extra: dict[str, str] = {}
    endpos: int | None = None
    words: list[str] = []
    for token in rest.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            # Free text after the result: GOSUB's `200 result=0 Gosub complete`
            # (res_agi.c; no transcript has one).
            words.append(token)
        elif key == "endpos":
            try:
                endpos = int(value)
            except ValueError:
                raise AgiProtocolError(f"endpos is not a number in {line!r}") from None
        else:
            extra[key] = value
    return AgiResponse(
        code=200, result=result, data=data, endpos=endpos, message=" ".join(words), extra=extra
    )


def _data_end(rest: str) -> int:
    """Index of the ')' that closes the data field starting at rest[0] == '('."""
    end = len(rest) - 1
    while end > 0:
        close = rest.rfind(")", 0, end + 1)
        if close < 0:
            break
        tail = rest[close + 1 :]
        if not tail.strip() or all("=" in t for t in tail.split()):
            return close
        end = close - 1
    raise AgiProtocolError(f"unclosed data field in {rest!r}")


def is_usage_start(line: str) -> bool:
    """`520-Invalid command syntax.  Proper usage follows:` opens a multi-line reply."""
    return line.startswith(f"{USAGE_ERROR_CODE}-")


def is_usage_end(line: str) -> bool:
    """The last line of a 520 usage reply.

    res_agi.c writes the usage text with "%s" and no newline of its own, so
    when the text lacks a final newline the end marker is glued to its last
    line (`...at the other end.520 End of proper usage.`). No transcript has a
    520; this follows the res_agi source.
    """
    return line.startswith(f"{USAGE_ERROR_CODE} ") or line.endswith(_USAGE_END)


def usage_response(lines: list[str]) -> AgiResponse:
    """Fold the lines of a multi-line 520 reply into one AgiResponse."""
    text = "\n".join(line.rstrip("\r\n") for line in lines)
    return AgiResponse(code=USAGE_ERROR_CODE, message=text)


def quote_argument(value: str) -> str:
    """Quote one command argument the way res_agi splits them.

    Asterisk splits on spaces outside double quotes and honours backslash
    escapes; an empty argument must be written `""` (STREAM FILE x "").
    """
    if value and not any(c in value for c in ' "\\\t'):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def encode_command(*words: str) -> bytes:
    """`encode_command("STREAM FILE", "beep", "")` -> b'STREAM FILE beep ""\\n'.

    The first word is the command verb, sent as is; the rest are arguments.
    Line breaks inside an argument would start a new command and are refused.
    """
    verb, *arguments = words
    for argument in words:
        if "\n" in argument or "\r" in argument:
            raise ValueError(f"AGI argument contains a line break: {argument!r}")
    line = " ".join([verb, *(quote_argument(a) for a in arguments)])
    return (line + "\n").encode("utf-8")
