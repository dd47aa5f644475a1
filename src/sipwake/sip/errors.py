"""Errors raised by the SIP core. Each carries the SIP status that answers it.

engine.py is the single place that turns a ProtocolError into a response (ARCHITECTURE.md,
"Errors"); everything below it raises and never answers by itself.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A request that cannot be processed; ``status``/``reason`` are the answer to send."""

    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, detail: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason

    def response_reason(self) -> str:
        """Reason phrase naming the fault, e.g. ``Bad Request (bad CSeq)`` (RFC 3261 §21.4.1)."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


class ParseError(ProtocolError):
    """Malformed message: 400 Bad Request (RFC 3261 §21.4.1)."""

    status = 400
    reason = "Bad Request"


class MessageTooLarge(ParseError):
    """Over the configured size limit: 513 Message Too Large (RFC 3261 §21.5.14)."""

    status = 513
    reason = "Message Too Large"


class VersionNotSupported(ParseError):
    """SIP version other than 2.0: 505 Version Not Supported (RFC 3261 §21.5.7)."""

    status = 505
    reason = "Version Not Supported"
