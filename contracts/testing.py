"""Test helpers for contracts: a chain executed block by block on an in-memory dict, no consensus.

Import this module from tests only: it needs ``hypothesis``, a test dependency. Typical use::

    from contracts.testing import LocalChain
    from node.rpc.client import deploy_token_call, sign_transaction

    chain = LocalChain()
    tx = sign_transaction(key, chain.chain_id, chain.nonce(key.address), [deploy_token_call(...)])
    (receipt,) = chain.execute([tx])
    chain.read(receipt.output[0], "totalSupply")

``random_workload`` runs a seeded, fixed sequence of token blocks (deterministic Ed25519 keys): two
processes that run it with the same seed must give the same state root after every block, whatever
their hash seed (``outputs_under_hash_seeds`` runs such a script in fresh processes).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import strategies as st

from contracts.builtin import UINT256_MAX
from contracts.registry import default_vm
from contracts.vm import DEPLOYER, VM, BlockEnv
from crypto.hashing import Hash32
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519, Context
from state.codec import Value, encode
from state.jmt import root_of
from state.types import Call, Receipt, Transaction, TxBody

__all__ = [
    "GENESIS_TIME",
    "TOKEN_OP_KINDS",
    "LocalChain",
    "TokenOp",
    "amounts",
    "outputs_under_hash_seeds",
    "random_workload",
    "sign",
    "state_root_of",
    "token_call",
    "token_ops",
]

GENESIS_TIME = 1_700_000_000
"""Block time (seconds) of height 0 of a ``LocalChain``; each block adds one second."""

TokenOp = tuple[str, int, int, int]
"""One token operation of a workload: ``(kind, actor, other, amount)``; actor and other are account indexes.

``transfer``: actor -> other; ``mint``: actor mints to other; ``approve``: actor lets other spend;
``transferFrom``: actor moves from other to itself; ``burn``: actor burns (other unused).
"""

TOKEN_OP_KINDS = ("transfer", "mint", "approve", "transferFrom", "burn")


def sign(key: KeyPair, chain_id: str, nonce: int, calls: Sequence[Call], gas_limit: int) -> Transaction:
    """Build and sign a transaction, exactly as ``node.rpc.client.sign_transaction`` does.

    (``contracts`` does not import ``node``; a test checks that both give the same transaction.)
    """
    body = TxBody(chain_id, key.address, nonce, gas_limit, tuple(calls), key.scheme_tag, key.public_key)
    return Transaction(body, key.sign(Context.TRANSACTION, encode(body)))


def state_root_of(state: Mapping[bytes, bytes]) -> Hash32:
    """The root of the authenticated state holding exactly ``state`` (``state.jmt.root_of``, built from scratch)."""
    return root_of(state)


class LocalChain:
    """Blocks executed with ``VM.execute_block`` on a plain dict state (the committed state)."""

    def __init__(self, chain_id: str = "qenex-test", vm: VM | None = None, *,
                 block_gas_limit: int | None = None) -> None:
        """A chain at height 0 with an empty state, running ``vm`` (``default_vm()`` if None).

        ``block_gas_limit`` bounds the sum of a block's gas limits (None: unbounded).
        """
        self.chain_id = chain_id
        self.vm = vm if vm is not None else default_vm()
        self.block_gas_limit = block_gas_limit
        self.state: dict[bytes, bytes] = {}
        self.height = 0
        self.timestamp = GENESIS_TIME
        """Block time (seconds) of the head."""
        self.last_writes: dict[bytes, bytes | None] = {}
        self.receipts: list[Receipt] = []

    def env(self, height: int | None = None, timestamp: int | None = None) -> BlockEnv:
        """The block environment of ``height`` (default: the next block, one second after the head).

        The head's own environment (``height == self.height``) carries the head's time.
        """
        h = self.height + 1 if height is None else height
        if timestamp is None:
            timestamp = self.timestamp if h == self.height else self.timestamp + (h - self.height)
        return BlockEnv(self.chain_id, h, timestamp)

    def get(self, key: bytes) -> bytes | None:
        """A committed state value, or None."""
        return self.state.get(key)

    def nonce(self, address: bytes) -> int:
        """The next nonce of ``address``."""
        return VM.account_nonce(self.state.get, address)

    def execute(self, txs: Sequence[Transaction], *, timestamp: int | None = None) -> list[Receipt]:
        """Execute ``txs`` as the next block and commit its writes; receipts are also kept in ``receipts``.

        ``timestamp``: the block time in seconds (default: one second after the head; it may equal
        the head's, as blocks less than a second apart do). Raises ``TxRejected`` (and then the
        state is unchanged), ``ValueError`` for a time before the head's.
        """
        if timestamp is not None and timestamp < self.timestamp:
            raise ValueError(f"block time {timestamp} before the head's {self.timestamp}")
        env = self.env(timestamp=timestamp)
        writes, receipts = self.vm.execute_block(self.state.get, env, txs, block_gas_limit=self.block_gas_limit)
        for key, value in writes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        self.last_writes = dict(writes)
        self.receipts.extend(receipts)
        self.height += 1
        self.timestamp = env.timestamp
        return receipts

    def read(self, to: bytes, method: str, *args: Value, sender: bytes = ZERO_ADDRESS) -> Value:
        """A read-only call on the committed state (``qnx_call``). Raises ``Revert``."""
        return self.vm.call_readonly(self.state.get, self.env(self.height), Address(sender), Address(to), method, args)

    def state_root(self) -> Hash32:
        """The authenticated root of the committed state."""
        return state_root_of(self.state)


def amounts() -> st.SearchStrategy[int]:
    """Token amounts: mostly small, with the uint256 edges (so overflow and big balances show up)."""
    return st.one_of(
        st.integers(min_value=0, max_value=20),
        st.integers(min_value=0, max_value=1_000),
        st.sampled_from((UINT256_MAX, UINT256_MAX - 1, 1 << 255)),
    )


def token_ops(accounts: int, *, max_size: int = 12) -> st.SearchStrategy[list[TokenOp]]:
    """Lists of token operations between ``accounts`` accounts (see ``TokenOp``)."""
    index = st.integers(min_value=0, max_value=accounts - 1)
    op = st.tuples(st.sampled_from(TOKEN_OP_KINDS), index, index, amounts())
    return st.lists(op, max_size=max_size)


def token_call(token: bytes, op: TokenOp, addresses: Sequence[bytes]) -> Call:
    """The call that performs ``op`` on ``token`` (sent by ``addresses[op[1]]``)."""
    kind, _, other, amount = op
    to = Address(token)
    if kind == "burn":
        return Call(to, "burn", (amount,))
    if kind == "transferFrom":
        return Call(to, "transferFrom", (addresses[other], addresses[op[1]], amount))
    return Call(to, kind, (addresses[other], amount))


def random_workload(seed: int, *, accounts: int = 4, blocks: int = 6, txs_per_block: int = 6,
                    roots: list[Hash32] | None = None) -> LocalChain:
    """Run a fixed pseudo-random token workload chosen by ``seed``; returns the chain at its end.

    Keys are Ed25519 from seeded bytes, so the transactions, and with them every state root,
    depend on ``seed`` only. Account 0 deploys the token (minter) in block 1; every later block
    holds ``txs_per_block`` random operations, some of which revert. If ``roots`` is given, the
    state root after every block is appended to it.
    """
    rng = random.Random(seed)
    keys = [KeyPair.from_private(ED25519.tag, rng.randbytes(32)) for _ in range(accounts)]
    addresses = [k.address for k in keys]
    chain = LocalChain()
    deploy = Call(DEPLOYER, "deploy", ("token/v1", ("Workload", "WRK", 6, addresses[0])))
    (receipt,) = chain.execute([sign(keys[0], chain.chain_id, 0, [deploy], 200_000)])
    if roots is not None:
        roots.append(chain.state_root())
    token = Address(receipt.output[0])
    nonces = [chain.nonce(a) for a in addresses]
    for _ in range(blocks):
        txs: list[Transaction] = []
        for _ in range(txs_per_block):
            actor = rng.randrange(accounts)
            kind = rng.choice(TOKEN_OP_KINDS)
            amount = rng.choice((rng.randrange(1_000), rng.randrange(1 << 256), UINT256_MAX))
            op: TokenOp = (kind, actor, rng.randrange(accounts), amount)
            txs.append(sign(keys[actor], chain.chain_id, nonces[actor], [token_call(token, op, addresses)], 200_000))
            nonces[actor] += 1
        chain.execute(txs)
        if roots is not None:
            roots.append(chain.state_root())
    return chain


def outputs_under_hash_seeds(script: str, hash_seeds: Sequence[str] = ("0", "3141592653"),
                             timeout: float = 300) -> list[str]:
    """Run the Python ``script`` in a fresh interpreter per ``PYTHONHASHSEED`` of ``hash_seeds``; their stdouts.

    The interpreter is this one, started in the project root. Raises ``AssertionError`` (with its
    stderr) if a run fails, ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    outputs = []
    for hash_seed in hash_seeds:
        result = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"PYTHONHASHSEED={hash_seed}: exit {result.returncode}\n{result.stderr}")
        outputs.append(result.stdout)
    return outputs
