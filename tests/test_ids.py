"""sipwake/ids.py: random ids drawn from the OS in blocks."""

from __future__ import annotations

import os
import re

import pytest

from sipwake.ids import RandomIds, new_id


def test_ids_are_hex_of_the_width_asked_and_never_repeat_across_blocks() -> None:
    ids = RandomIds(nbytes=8, block=64)  # 8 ids a block: 5,000 draws cross 625 blocks
    drawn = [ids() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_block_that_is_not_a_multiple_of_the_width_gives_whole_ids() -> None:
    ids = RandomIds(nbytes=3, block=10)  # 3 ids of 6 hex digits a block, 1 byte unused
    assert all(len(ids()) == 6 for _ in range(100))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        RandomIds(nbytes=0)
    with pytest.raises(ValueError):
        RandomIds(nbytes=16, block=8)


def test_forget_draws_a_new_block() -> None:
    ids = RandomIds(nbytes=4, block=64)
    first = ids()
    ids.forget()
    again = [ids() for _ in range(16)]  # a whole block: the old one is not resumed
    assert first not in again


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_hand_out_its_parents_next_id() -> None:
    new_id()  # the parent has a block with ids left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, new_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{16}", child)
    assert child != new_id()  # without the fork hook both would take the same next id
