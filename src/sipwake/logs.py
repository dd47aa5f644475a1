"""Logging setup and the per-call context that tags every line with its Call-ID.

Code logs with the stdlib (``log = logging.getLogger(__name__)``, lazy %-args:
``log.info("parked %s", aor)``); a filtered-out level costs one ``isEnabledFor`` check and
nothing here runs for it. While a message is being handled the engine wraps the work in
``with call_context(msg.call_id):`` (or ``set_call_id``/``reset_call_id``); a handler filter
then copies the id into every record emitted, whatever module emits it. The id lives in a
ContextVar, so an asyncio task created inside the block inherits it (tasks copy the context
when created) and concurrent calls do not see each other's id.

Text: ``2026-11-21T10:00:00.123Z INFO sipwake.engine [call_id=abc@host] message``
JSON: one object per line: ``{"ts": ..., "level": ..., "logger": ..., "msg": ...,
"call_id": ...}`` plus any ``extra={...}`` fields and ``exc`` for tracebacks.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO

import msgspec

__all__ = [
    "CallIdFilter",
    "JsonFormatter",
    "LogEvery",
    "TextFormatter",
    "call_context",
    "get_call_id",
    "reset_call_id",
    "set_call_id",
    "setup_logging",
]

_call_id: ContextVar[str | None] = ContextVar("sipwake_call_id", default=None)

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# h2/hpack log every frame at DEBUG: our own debug output would drown in the push traffic.
_NOISY: Final = ("h2", "hpack", "websockets")
# Attributes every LogRecord has; anything else came from ``extra=`` and goes into JSON.
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "call_id",
    "taskName",
}


def get_call_id() -> str | None:
    return _call_id.get()


def set_call_id(call_id: str | None) -> Token[str | None]:
    """Tag log lines from this context with ``call_id``; undo with ``reset_call_id(token)``."""
    return _call_id.set(call_id)


def reset_call_id(token: Token[str | None]) -> None:
    _call_id.reset(token)


@contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """``with call_context(request.call_id): ...`` tags log lines emitted inside."""
    token = _call_id.set(call_id)
    try:
        yield
    finally:
        _call_id.reset(token)


class CallIdFilter(logging.Filter):
    """Copy the current Call-ID into ``record.call_id`` (None outside a call).

    Installed on the handler rather than a logger: logger filters do not apply to records
    propagated from child loggers, handler filters see them all, and only after the level
    check has passed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):  # an explicit extra={"call_id": ...} wins
            record.call_id = _call_id.get()
        return True


class LogEvery:
    """At most one warning per ``interval`` seconds for a recurring condition (a limit
    biting under attack would otherwise flood the log); says how many were suppressed.
    The caller passes the time in, from whatever clock it runs on."""

    __slots__ = ("_last", "_log", "_suppressed", "interval")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0

    def __call__(self, now: float, msg: str, *args: object) -> None:
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._log.warning(msg + more, *args)
        self._last = now
        self._suppressed = 0


def _utc_stamp(record: logging.LogRecord) -> str:
    # ISO 8601 UTC with milliseconds; gmtime + the record's msecs avoids datetime objects.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> [call_id=<id>] <message>``; the bracket only inside a call."""

    def format(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        tag = f" [call_id={call_id}]" if call_id else ""
        line = f"{_utc_stamp(record)} {record.levelname} {record.name}{tag} {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc_stamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            out["call_id"] = call_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # str() for anything msgspec cannot encode (a URI object passed in extra=, ...).
        return msgspec.json.encode(out, enc_hook=str).decode()


def setup_logging(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Configure the root logger: one handler on ``stream`` (stderr by default).

    Calling it again replaces the handler it installed before (``serve --log-level``
    after loading the config, tests), leaving handlers others installed (pytest) alone.
    """
    try:
        levelno = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}") from None
    if fmt == "text":
        formatter: logging.Formatter = TextFormatter()
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(CallIdFilter())
    handler.set_name("sipwake")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sipwake"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(levelno, logging.WARNING))
