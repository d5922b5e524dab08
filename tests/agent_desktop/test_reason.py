"""The predicted reason for a call: each rule, its order, and its explanation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from ctiserver.agent_desktop.reason import PastContact, ivr_choice, predict_reason

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
IVR = {
    "path": [
        {"node": "welcome", "type": "play", "at": 1.0},
        {"node": "main", "type": "menu", "at": 2.0, "label": "主菜单", "keys": "-2", "result": "2"},
        {"node": "lost_card", "type": "queue", "at": 3.0, "label": "挂失 Lost card",
         "result": "cards"},
    ]
}  # fmt: skip


def test_repeat_contact_today_wins() -> None:
    history = [
        PastContact(NOW - timedelta(hours=1), "billing", False),
        PastContact(NOW - timedelta(days=2), "card", False),
    ]
    reason = predict_reason(now=NOW, history=history, ivr=IVR, queue="support")
    assert reason is not None
    assert (reason.text, reason.rule) == ("repeat contact", "repeat_today")
    assert "1 earlier contact(s) today" in reason.explanation and "billing" in reason.explanation


def test_today_is_the_centre_time_zone_day() -> None:
    # 23:30 UTC yesterday is 07:30 today in Beijing.
    beijing = timezone(timedelta(hours=8))
    history = [PastContact(NOW - timedelta(hours=9, minutes=30), "billing", True)]
    assert predict_reason(now=NOW, history=history, tz=UTC) is None
    reason = predict_reason(now=NOW, history=history, tz=beijing)
    assert reason is not None and reason.rule == "repeat_today"


def test_unresolved_interaction_within_seven_days_is_a_follow_up() -> None:
    history = [
        PastContact(NOW - timedelta(days=1), "address-change", True),
        PastContact(NOW - timedelta(days=3), "billing-question", False),
    ]
    reason = predict_reason(now=NOW, history=history, ivr=IVR, queue="support")
    assert reason is not None
    assert reason.text == "follow-up on billing-question"
    assert reason.rule == "unresolved_recent"
    assert "2026-02-27" in reason.explanation


def test_old_unresolved_interactions_fall_back_to_the_ivr_choice() -> None:
    history = [PastContact(NOW - timedelta(days=8), "billing", False)]
    reason = predict_reason(now=NOW, history=history, ivr=IVR, queue="cards")
    assert reason is not None
    assert (reason.text, reason.rule) == ("挂失 Lost card", "ivr_choice")
    assert reason.explanation == "pressed 2 at IVR menu 主菜单 -> 挂失 Lost card"


def test_ivr_queue_without_menu_and_queue_only() -> None:
    assert ivr_choice({"path": [{"node": "q", "type": "queue", "result": "support"}]}) == (
        "support",
        "the IVR sent the call to queue support",
    )
    assert ivr_choice({"path": [{"node": "m", "type": "menu", "result": "invalid"}]}) is None
    reason = predict_reason(now=NOW, queue="support", queue_title="客户服务")
    assert reason is not None
    assert (reason.text, reason.rule) == ("客户服务", "queue")
    assert predict_reason(now=NOW) is None
