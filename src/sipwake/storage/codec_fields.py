"""The decoded shape of each stored binding class, for msgspec to validate against
(codec.py). A module of its own, never compiled: mypyc turns a ``TypedDict`` into a plain
``dict`` whose optional keys msgspec can no longer see (every key became required, and
every stored binding failed to load), and setup.py compiles codec.py."""

from __future__ import annotations

from typing import TypedDict


# Not the binding classes themselves: plain classes (policy/bindings.py), which msgspec
# does not convert to, and compiled by mypyc their annotations are erased to runtime
# classes (``flow: type``). tests/storage/test_codec.py keeps these in step with
# policy/bindings.py.
class _FlowRefRequired(TypedDict):
    transport: str
    remote_host: str
    remote_port: int


class FlowRefFields(_FlowRefRequired, total=False):
    local_host: str
    local_port: int
    conn_id: int
    node_id: str


class _PushTargetRequired(TypedDict):
    provider: str
    prid: str


class PushTargetFields(_PushTargetRequired, total=False):
    param: str
    purr: str
    alert_prid: str
    app_id: str


class _BindingRequired(TypedDict):
    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int


class BindingFields(_BindingRequired, total=False):
    q: float
    instance: str
    reg_id: int
    path: tuple[str, ...]
    flow: FlowRefFields | None
    push: PushTargetFields | None
    user_agent: str
    registered_at: float
    extra: tuple[tuple[str, str], ...]
