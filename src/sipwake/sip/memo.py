"""A bounded memo of parsed header values: the same text is parsed once.

Why: the messages of one transaction and dialog repeat the same texts. A 200 echoes the
INVITE's Vias, From and To (RFC 3261 §8.2.6.2); the ACK and BYE carry the dialog's From,
To and Route set (§12.2.1.1); every request of a call carries "1 INVITE"-like CSeqs. A
compiled parse of a name-addr costs ~21,000 instructions, a URI ~14,000, a Via ~11,000
(callgrind, bench_inproc.py), against a few hundred for a dict lookup and a copy.

What a caller gets is its own object: the parsed views are plain classes with a
``params`` dict, and one message's view may be changed (``stamp_via`` adds ``received``
to a request's top Via, RFC 3261 §18.2.1), so the memo keeps an original nobody else holds
and hands out copies (each view's ``copy()``). Only a text that parsed is kept: a
malformed one raises every time.

Bounded like the UDP flow cache and the proxy's pair tokens: emptied when full, so a flood
of distinct texts costs one ``clear`` per ``size`` of them and memory stays flat; a text
longer than ``LONGEST_TEXT`` is not kept at all. The overload path reads a refused
request's top Via without the memo (``parse_via``): its branch is new, and a flood of
refusals would only empty the memo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

MEMO_SIZE = 4096  # texts per memo: ~1 KB each with its parsed view
# Longer texts are parsed every time: what a memo holds stays under MEMO_SIZE times this
# (and its parse, about as large), ~10 MB per memo however long the lines an attacker
# sends. SIP texts are far shorter; a push Contact, the longest we see, is ~300-600.
LONGEST_TEXT = 1024


class Memo(Generic[T]):
    __slots__ = ("_known", "_longest", "_size")

    def __init__(self, size: int = MEMO_SIZE, longest: int = LONGEST_TEXT) -> None:
        self._known: dict[str, T] = {}
        self._size = size
        self._longest = longest

    def parsed(self, text: str, parse: Callable[[str], T]) -> T:
        """The view kept for ``text``, parsed with ``parse`` (and kept) the first time;
        the original, to copy before handing it out. ``parse``'s errors pass through
        and nothing is kept."""
        known = self._known.get(text)
        if known is None:
            known = parse(text)
            self.put(text, known)
        return known

    def get(self, text: str) -> T | None:
        """The view kept for ``text`` (the original: copy it before handing it out)."""
        return self._known.get(text)

    def put(self, text: str, view: T) -> None:
        """Keep ``view`` (which the caller must not hand out) as the parse of ``text``,
        unless ``text`` is longer than the memo keeps."""
        if len(text) > self._longest:
            return
        known = self._known
        if len(known) >= self._size:
            known.clear()
        known[text] = view

    def __len__(self) -> int:
        return len(self._known)
