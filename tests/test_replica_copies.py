"""Copies of consensus messages cost no second signature verification (a replayed vote flood stays cheap)."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.exceptions import InvalidMessage
from consensus.messages import PREPARE, Vote, vote_signing_bytes
from consensus.replica import Broadcast
from consensus.simulation import CHAIN, Sim, make_block
from crypto.hashing import ZERO_HASH
from crypto.signatures import Context


def test_a_byte_identical_copy_is_verified_once_and_a_reforged_one_is_refused() -> None:
    sim = Sim(4, seed=3)
    block = make_block(1, ZERO_HASH)
    pre_prepare = next(a.message for a in sim.replicas[0].propose(block) if isinstance(a, Broadcast))
    backup = sim.replicas[1]
    sim.carry_out(1, backup.receive(pre_prepare))
    calls: list[int] = []
    verify = backup._verify

    def counting(index: int, message: bytes, signature: bytes) -> None:
        calls.append(index)
        verify(index, message, signature)

    backup._verify = counting
    sig = sim.keys[2].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, PREPARE, 0, 1, block.hash, 2))
    vote = Vote(PREPARE, 0, 1, block.hash, 2, sig)
    backup.receive(vote)
    for _ in range(100):  # replayed: byte-identical copies
        assert backup.receive(vote) == []
    assert calls == [2], "one verification for the vote and its 100 copies"
    forged = dataclasses.replace(vote, signature=bytes(len(vote.signature)))  # same vote, other bytes
    with pytest.raises(InvalidMessage, match="bad signature"):
        backup.receive(forged)
    assert calls == [2, 2], "anything but an exact copy is verified"
