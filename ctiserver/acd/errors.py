"""Errors the routing engine raises for inputs it cannot apply.

An input that raises has changed nothing: the engine checks before it acts.
"""

from __future__ import annotations


class UnknownCall(KeyError):
    """No call with this id is in the engine (never queued, or already gone)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id)
        self.call_id = call_id

    def __str__(self) -> str:
        return f"unknown call {self.call_id!r}: not queued, or already gone"


class UnknownAgent(KeyError):
    """No agent with this id is configured."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.agent_id = agent_id

    def __str__(self) -> str:
        return f"unknown agent {self.agent_id!r}: not in the configuration"


class UnknownQueue(KeyError, ValueError):
    """No queue with this name is configured.

    A KeyError like the other unknown ids, and a ValueError because enqueueing
    on a queue that does not exist is a bad request.
    """

    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue

    def __str__(self) -> str:
        return f"unknown queue {self.queue!r}: not in the configuration"


class IllegalTransition(ValueError):
    """The input does not apply to the state the call or agent is in."""
