"""Every scenario listed in shared/asterisk/INDEX.md is replayed, or its exclusion is explained.

The replay tests are parametrized over the folders on disk; this test ties
those folders to INDEX.md's table, so a scenario listed there but missing on
disk (or the reverse) fails here instead of silently dropping out of the
replays.
"""

import re

from ctiserver.sim.transcript import scenarios, transcripts_root

# Scenarios with no FastAGI recording, and why (the AMI side is still replayed).
NO_FASTAGI = {
    "01_ami_basics": "AMI only: login, actions, event lists; callers dial 999 (no AGI)",
    "05c_originate_failures": "Originates of agent legs that fail: no call reaches an AGI",
    "12_async_agi": "Async AGI runs over AMI (AGI action, AsyncAGI* events): replayed as AMI",
    "12b_async_agi_caller_hangup": "Async AGI over AMI, as 12",
    "14_load_20_calls": "the recording kept only the AMI stream (INDEX: 'AMI stream only')",
    "15_click_to_dial_originate": "Originate of the agent leg into [cti-outbound]: no AGI",
}


def _indexed_folders() -> list[str]:
    index = (transcripts_root().parent / "INDEX.md").read_text(encoding="utf-8")
    return re.findall(r"^\| [0-9a-z]+ \| `([^`]+)` \|", index, flags=re.MULTILINE)


def test_index_lists_exactly_the_recorded_folders() -> None:
    listed = _indexed_folders()
    on_disk = [scenario.name for scenario in scenarios()]
    assert len(listed) == 26
    assert sorted(listed) == sorted(on_disk)


def test_every_indexed_scenario_has_an_ami_replay() -> None:
    for scenario in scenarios():
        assert scenario.ami_files, f"{scenario.name}: no ami*.jsonl to replay"


def test_fastagi_replay_or_a_stated_reason() -> None:
    for scenario in scenarios():
        if not scenario.has_agi:
            assert scenario.name in NO_FASTAGI, f"{scenario.name}: no agi.jsonl and no reason"
        else:
            assert scenario.name not in NO_FASTAGI, f"{scenario.name}: has agi.jsonl now"
