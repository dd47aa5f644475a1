"""Binding builders shared by the storage tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sipwake.policy.bindings import Binding, FlowRef, PushTarget

NOW = 1_700_000_000.0


def binding(aor: str = "sip:alice@example.com", n: int = 0, **kw: Any) -> Binding:
    """A fully populated push binding, distinct per ``n``."""
    fields: dict[str, Any] = {
        "aor": aor,
        "contact": f"sip:alice@192.0.2.{n % 250}:{5060 + n};transport=tcp;ob",
        "expires_at": NOW + 3600,
        "call_id": f"call-{n}@phone",
        "cseq": 100 + n,
        "q": 0.5,
        "instance": f"urn:uuid:00000000-0000-0000-0000-{n:012d}",
        "reg_id": 1,
        "path": ("<sip:edge.example.com;lr>",),
        "flow": FlowRef("TCP", "192.0.2.1", 40000 + n, "10.0.0.1", 5060, 7 + n, "node-a"),
        "push": PushTarget("apns", f"{n:064x}", "ABCDE12345.com.example.app.voip"),
        "user_agent": "Example/1.0",
        "registered_at": NOW,
        "extra": (("+sip.pnsreg", ""),),
    }
    for name, value in kw.items():
        # Only flow and push are optional. Compiled (mypyc), Binding rejects a None
        # elsewhere; pure Python would take it, and the test would pass on a lie.
        if value is None and name not in ("flow", "push"):
            raise TypeError(f"binding(): {name}=None, but the field is not optional")
    fields.update(kw)
    return Binding(**fields)


def append(b: Binding) -> Callable[[list[Binding]], tuple[list[Binding], int]]:
    """Update callback: add ``b``, return how many bindings there were before."""

    def fn(current: list[Binding]) -> tuple[list[Binding], int]:
        return [*current, b], len(current)

    return fn


def replace_all(
    bindings: list[Binding],
) -> Callable[[list[Binding]], tuple[list[Binding], None]]:
    def fn(current: list[Binding]) -> tuple[list[Binding], None]:
        return list(bindings), None

    return fn
