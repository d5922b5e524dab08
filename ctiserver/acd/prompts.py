"""What a waiting caller hears: sound file names for queue announcements and offers.

Defaults are files of Asterisk's core sound set (asterisk-core-sounds-en),
so a stock installation plays them. A missing file would look like a hang-up
on the FastAGI socket (`result=-1 endpos=0`), so operators who record their
own prompts must install them before naming them here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Prompts:
    you_are_next: str = "queue-youarenext"
    there_are: str = "queue-thereare"  # "there are" <n> "calls waiting ahead of you"
    calls_waiting: str = "queue-callswaiting"
    hold_time: str = "queue-holdtime"  # "the estimated hold time is" <n> "minutes"
    minutes: str = "queue-minutes"
    less_than: str = "queue-less-than"
    # "press" "1" "to call back": offered when a step says OfferCallback.
    callback_offer: tuple[str, ...] = ("vm-press", "digits/1", "vm-tocallback")
    callback_enter_number: str = "vm-enter-num-to-call"
    callback_confirmed: str = "auth-thankyou"
    voicemail_intro: str = "vm-intro"
    goodbye: str = "vm-goodbye"
    closed: str = "tt-allbusy"
    thank_you: str = "queue-thankyou"
