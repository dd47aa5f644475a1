"""Random ids for SIP tags and branch suffixes, drawn from the OS in blocks.

RFC 3261 §19.3 wants a tag "globally unique and cryptographically random with at least
32 bits of randomness", and a branch unique across space and time (§8.1.1.7). Each id
here is 64 bits of ``os.urandom``. One ``getrandom`` system call per id cost ~0.45 µs
and showed as 3 % of the CPU a REGISTER takes (its 200's To tag) and more of a refusal
under overload (the 503's tag); a block of 4 KiB serves 512 ids per call. The bytes are
the same CSPRNG output either way, and no id tells anything about another.

A forked child must not hand out its parent's ids: the block is dropped in the child
(``os.register_at_fork``), so its next id is drawn afresh.
"""

from __future__ import annotations

import os
from typing import Final

BLOCK: Final = 4096  # bytes of os.urandom per draw


class RandomIds:
    """A callable giving ``nbytes`` random bytes as hex for each call."""

    __slots__ = ("_block", "_hex", "_pos", "_width")

    def __init__(self, nbytes: int = 8, block: int = BLOCK) -> None:
        if nbytes <= 0 or block < nbytes:
            raise ValueError("need 0 < nbytes <= block")
        self._width = 2 * nbytes
        self._block = block - block % nbytes  # whole ids only
        self._hex = ""
        self._pos = 0

    def __call__(self) -> str:
        pos = self._pos
        end = pos + self._width
        if end > len(self._hex):
            self._hex = os.urandom(self._block).hex()
            pos, end = 0, self._width
        self._pos = end
        return self._hex[pos:end]

    def forget(self) -> None:
        """Drop what is left of the block (a forked child: those ids are its parent's)."""
        self._hex = ""
        self._pos = 0


new_id: Final = RandomIds()
os.register_at_fork(after_in_child=new_id.forget)
