"""``Value``: equality, hash and repr for the immutable plain classes on the hot paths.

A dataclass's generated ``__init__`` stays interpreted when mypyc compiles its module, so
the values made once per message (events, targets, forwarding plans, REGISTER outcomes)
are plain classes with a hand-written ``__init__`` and ``Final`` attributes (read-only once
compiled). What a frozen dataclass also gave them, comparison by fields, a hash and a
readable repr, comes from here: a subclass names its fields once, in ``_items()``.
"""

from __future__ import annotations


class Value:
    __slots__ = ()

    def _items(self) -> tuple[tuple[str, object], ...]:
        """(name, value) of every field, in constructor order."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or type(other) is not type(self):
            return NotImplemented
        return self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._items())
        return f"{type(self).__name__}({fields})"
