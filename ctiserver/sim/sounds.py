"""Lengths of the prompts the emulator pretends to play, in 8 kHz samples.

Taken from the transcripts where a prompt played to its end (`endpos=` of
STREAM FILE, STREAM_BEGIN/END gaps) and otherwise estimated from Debian's
asterisk-core-sounds-en. Unknown files play for `DEFAULT_SAMPLES`.
"""

from __future__ import annotations

RATE = 8000
DEFAULT_SAMPLES = 2 * RATE

SAMPLES: dict[str, int] = {
    "pls-hold-while-try": 19398,  # 03c, 04, 06: endpos of a full play
    "number-not-answering": 13179,  # 06
    "goodbye": 7459,  # 06
    "demo-congrats": 30 * RATE,  # 03a: "30 s"
    "beep": 3384,  # 02: STREAM_BEGIN .. STREAM_END = 0.423 s
    "vm-enter-num-to-call": 16160,  # 02: 2.02 s
    "queue-thankyou": 2 * RATE,
    "queue-periodic-announce": 3 * RATE,
    "agent-pass": 12000,
    "silence/1": RATE,
    "digits/0": 6400,
    "digits/1": 7272,  # 02: SAY DIGITS 1234 took 3.29 s in total
    "digits/2": 5960,
    "digits/3": 6680,
    "digits/4": 6392,
    "digits/5": 6400,
    "digits/6": 6800,
    "digits/7": 6800,
    "digits/8": 5600,
    "digits/9": 6600,
    "digits/star": 6400,
    "digits/pound": 6400,
}


def samples(name: str) -> int:
    """Length of a sound file (path and extension ignored)."""
    base = name.rsplit(".", 1)[0] if name.endswith((".wav", ".gsm", ".ulaw", ".sln")) else name
    if base in SAMPLES:
        return SAMPLES[base]
    return SAMPLES.get(base.rsplit("/", 1)[-1], DEFAULT_SAMPLES)


def seconds(name: str) -> float:
    return samples(name) / RATE


def digit_file(char: str) -> str:
    if char == "*":
        return "digits/star"
    if char == "#":
        return "digits/pound"
    return f"digits/{char.lower()}"


def number_files(number: int) -> list[str]:
    """SAY NUMBER: the files Asterisk's English say.c would play (simplified)."""
    if number < 0:
        return ["digits/minus", *number_files(-number)]
    if number < 21:
        return [f"digits/{number}"]
    if number < 100:
        tens, units = divmod(number, 10)
        return [f"digits/{tens * 10}"] + ([f"digits/{units}"] if units else [])
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return [f"digits/{hundreds}", "digits/hundred"] + (number_files(rest) if rest else [])
    thousands, rest = divmod(number, 1000)
    return number_files(thousands) + ["digits/thousand"] + (number_files(rest) if rest else [])
