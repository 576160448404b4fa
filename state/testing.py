"""Hypothesis strategies for the canonical codec (``state.codec``) and the chain types (``state.types``).

Import this module from tests only: it needs ``hypothesis``, a test dependency. Typical use::

    from hypothesis import given

    from state import testing as sst
    from state.types import Transaction

    @given(sst.transactions())
    def test_transaction_round_trip(tx: Transaction) -> None:
        assert Transaction.decode(tx.encode()) == tx

Every strategy draws only values the canonical profile can encode, so for each of them
``decode(encode(x)) == x`` must hold: arrays are always Python tuples, integers cover the native
msgpack range and the big-integer extension up to 2**512 - 1 in magnitude, and nesting stays far below
the decoder's depth limit of 64. Sizes are small, so a test runs its examples in well under a second.

Public keys and signatures are random bytes: fine for codec tests, useless for signature checks (sign
with a real ``crypto.keys.KeyPair`` for those). Domain fields are realistic (nonces, heights and gas are
unsigned 64-bit, statuses 0 or 1); arbitrary profile values appear where the types allow any
``Value`` (call arguments, event topics and data, receipt outputs).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from crypto.hashing import HASH_LEN, Hash32
from crypto.keys import ADDRESS_LEN, Address
from state.codec import MAX_BIGINT_BYTES
from state.proof import ProofLeaf, ProofLevel, StateProof
from state.types import (
    Block,
    BlockHeader,
    Call,
    CommitCertificate,
    Event,
    Genesis,
    Param,
    Receipt,
    Transaction,
    TxBody,
    Validator,
    ValidatorSignature,
)

__all__ = [
    "INT_BOUNDARIES",
    "addresses",
    "blocks",
    "calls",
    "certificates",
    "chain_ids",
    "events",
    "genesis",
    "hashes",
    "headers",
    "integers",
    "proof_levels",
    "receipts",
    "scalars",
    "state_proofs",
    "transactions",
    "tx_bodies",
    "u64s",
    "validator_signatures",
    "validators",
    "values",
]

_BIG = 1 << (8 * MAX_BIGINT_BYTES)  # 2**512: the first integer the profile cannot hold

INT_BOUNDARIES: tuple[int, ...] = (
    0,
    1,
    -1,
    127,
    128,
    -32,
    -33,
    255,
    256,
    (1 << 63) - 1,
    -(1 << 63),
    -(1 << 63) - 1,  # first negative big integer (extension type 2)
    (1 << 64) - 1,
    1 << 64,  # first positive big integer (extension type 1)
    _BIG - 1,
    -(_BIG - 1),
)
"""Integers where the encoding changes form: fixint / uint8 / int64 / uint64 / big-integer edges."""


def integers() -> st.SearchStrategy[int]:
    """Any integer of the profile: native msgpack ints, big ints beyond 64 bits, and the edges."""
    return st.one_of(
        st.sampled_from(INT_BOUNDARIES),
        st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
        st.integers(min_value=1 << 64, max_value=_BIG - 1),
        st.integers(min_value=-(_BIG - 1), max_value=-(1 << 63) - 1),
    )


def u64s() -> st.SearchStrategy[int]:
    """Unsigned 64-bit integers: nonces, heights, views, gas, timestamps."""
    return st.integers(min_value=0, max_value=(1 << 64) - 1)


def scalars() -> st.SearchStrategy[Any]:
    """The leaves of the profile: ``None``, ``bool``, integers, ``bytes`` and ``str``."""
    return st.one_of(
        st.none(),
        st.booleans(),
        integers(),
        st.binary(max_size=64),
        st.text(max_size=32),
    )


def values(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any profile value: scalars and (nested) tuples of values.

    ``max_leaves`` bounds the size, and with it the nesting depth; keep it under 64, the decoder's
    depth limit.
    """
    return st.recursive(
        scalars(),
        lambda children: st.lists(children, max_size=5).map(tuple),
        max_leaves=max_leaves,
    )


def _tuples(elements: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=max_size).map(tuple)


def addresses() -> st.SearchStrategy[Address]:
    """20-byte addresses."""
    return st.binary(min_size=ADDRESS_LEN, max_size=ADDRESS_LEN).map(Address)


def hashes() -> st.SearchStrategy[Hash32]:
    """32-byte SHA3-256 digests."""
    return st.binary(min_size=HASH_LEN, max_size=HASH_LEN).map(Hash32)


def chain_ids() -> st.SearchStrategy[str]:
    """Chain identifiers (any short text, ``"qenex-devnet"`` often)."""
    return st.one_of(st.just("qenex-devnet"), st.text(max_size=16))


def _scheme_tags() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=255)


def calls() -> st.SearchStrategy[Call]:
    """Contract calls with arbitrary profile values as arguments."""
    return st.builds(Call, addresses(), st.text(max_size=16), _tuples(values(max_leaves=8), 4))


def tx_bodies() -> st.SearchStrategy[TxBody]:
    """Transaction bodies; ``sender`` is random, not the address of ``public_key``."""
    return st.builds(
        TxBody,
        chain_ids(),
        addresses(),
        u64s(),
        u64s(),
        _tuples(calls(), 3),
        _scheme_tags(),
        st.binary(max_size=64),
    )


def transactions() -> st.SearchStrategy[Transaction]:
    """Transactions with random signature bytes (they do not verify)."""
    return st.builds(Transaction, tx_bodies(), st.binary(max_size=128))


def headers() -> st.SearchStrategy[BlockHeader]:
    """Block headers with random roots."""
    return st.builds(
        BlockHeader,
        chain_ids(),
        u64s(),
        u64s(),
        hashes(),
        u64s(),
        st.integers(min_value=0, max_value=255),
        hashes(),
        hashes(),
        hashes(),
        u64s(),
    )


def blocks() -> st.SearchStrategy[Block]:
    """Blocks of up to three transactions (``tx_root`` is random, not their Merkle root)."""
    return st.builds(Block, headers(), _tuples(transactions(), 3))


def events() -> st.SearchStrategy[Event]:
    """Contract events with arbitrary topics and data."""
    return st.builds(
        Event,
        addresses(),
        st.text(max_size=16),
        _tuples(values(max_leaves=4), 3),
        _tuples(values(max_leaves=4), 3),
    )


def receipts() -> st.SearchStrategy[Receipt]:
    """Receipts, successful (status 1) or reverted (status 0)."""
    return st.builds(
        Receipt,
        hashes(),
        st.sampled_from((0, 1)),
        u64s(),
        _tuples(events(), 3),
        _tuples(values(max_leaves=8), 3),
        st.text(max_size=32),
    )


def validator_signatures() -> st.SearchStrategy[ValidatorSignature]:
    """One validator's (random) signature, by validator index."""
    return st.builds(ValidatorSignature, st.integers(min_value=0, max_value=255), st.binary(max_size=128))


def certificates() -> st.SearchStrategy[CommitCertificate]:
    """Commit certificates with random signatures."""
    return st.builds(CommitCertificate, u64s(), u64s(), hashes(), _tuples(validator_signatures(), 7))


def validators() -> st.SearchStrategy[Validator]:
    """Genesis validators with random keys."""
    return st.builds(
        Validator,
        st.text(max_size=16),
        addresses(),
        _scheme_tags(),
        st.binary(max_size=64),
        _scheme_tags(),
        st.binary(max_size=64),
    )


def genesis() -> st.SearchStrategy[Genesis]:
    """Genesis documents with up to four validators and a few ``Param(name, value)`` parameters."""
    return st.builds(
        Genesis,
        chain_ids(),
        u64s(),
        _tuples(validators(), 4),
        _tuples(st.builds(Param, st.text(max_size=16), integers()), 4),
    )


def proof_levels() -> st.SearchStrategy[ProofLevel]:
    """Proof levels: a non-empty bitmap and as many random sibling hashes as it allows (or one fewer)."""
    return st.integers(min_value=1, max_value=0xFFFF).flatmap(
        lambda bitmap: st.builds(
            ProofLevel,
            st.just(bitmap),
            st.lists(hashes(), min_size=bitmap.bit_count() - 1, max_size=bitmap.bit_count()).map(tuple),
        )
    )


def state_proofs(*, max_levels: int = 6) -> st.SearchStrategy[StateProof]:
    """State proofs (``state.proof.StateProof``) of up to ``max_levels`` levels, with or without a leaf.

    Random hashes: right for codec tests; they verify against no real root.
    """
    return st.builds(
        StateProof,
        st.lists(proof_levels(), max_size=max_levels).map(tuple),
        st.none() | st.builds(ProofLeaf, hashes(), hashes()),
    )
