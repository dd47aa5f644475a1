"""Errors raised by the SIP core. Each carries the SIP status that answers it.

engine.py is the single place that turns a ProtocolError into a response (docs/architecture.md,
"Errors"); everything below it raises and never answers by itself.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """A request that cannot be processed; ``status``/``reason`` are the answer to send.

    A subclass states its answer as the class constants ``STATUS``/``REASON``; the instance
    attributes are set from them (or from the arguments) in ``__init__``. Not as class-level
    defaults of ``status``/``reason`` themselves: compiled by mypyc, an attribute is a slot of
    the instance, and a subclass's class-body override of its default is silently lost (a
    483 answered as 500)."""

    STATUS: ClassVar[int] = 500
    REASON: ClassVar[str] = "Server Internal Error"

    def __init__(self, detail: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        cls = type(self)
        self.status: int = cls.STATUS if status is None else status
        self.reason: str = cls.REASON if reason is None else reason

    def response_reason(self) -> str:
        """Reason phrase naming the fault, e.g. ``Bad Request (bad CSeq)`` (RFC 3261 §21.4.1)."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


class ParseError(ProtocolError):
    """Malformed message: 400 Bad Request (RFC 3261 §21.4.1)."""

    STATUS = 400
    REASON = "Bad Request"


class MessageTooLarge(ParseError):
    """Over the configured size limit: 513 Message Too Large (RFC 3261 §21.5.14)."""

    STATUS = 513
    REASON = "Message Too Large"


class VersionNotSupported(ParseError):
    """SIP version other than 2.0: 505 Version Not Supported (RFC 3261 §21.5.7)."""

    STATUS = 505
    REASON = "Version Not Supported"
