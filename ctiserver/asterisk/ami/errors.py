"""Exceptions raised by the AMI client (ctiserver.asterisk.ami.client)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctiserver.asterisk.ami.client import ActionResult


class AmiError(Exception):
    """Base class of every AMI client error."""


class AmiConnectionLost(AmiError):
    """The connection went away (or was never there) before the answer came."""


class AmiNotConnected(AmiConnectionLost):
    """An action was issued while no logged-in connection exists (e.g. during a reconnect)."""


class AmiClosed(AmiConnectionLost):
    """The client was closed; pending and new actions fail with this."""


class AmiAuthenticationError(AmiError):
    """Asterisk refused the Login (or the MD5 Challenge)."""


class AmiTimeout(AmiError, TimeoutError):
    """No answer within the timeout; names the action so logs say what hung."""

    def __init__(self, action: str, action_id: str | None, timeout: float) -> None:
        ident = f" ({action_id})" if action_id else ""
        super().__init__(f"AMI action {action}{ident} got no answer within {timeout:g} s")
        self.action = action
        self.action_id = action_id
        self.timeout = timeout


class AmiActionError(AmiError):
    """Asterisk answered `Response: Error` and the caller asked for a check."""

    def __init__(self, result: ActionResult) -> None:
        super().__init__(f"AMI action {result.action} failed: {result.message or '(no message)'}")
        self.result = result
