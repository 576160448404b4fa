"""Test helpers for the AMM (``contracts.amm``) on a ``LocalChain``: setup, calls, a seeded workload.

Import from tests only (through ``contracts.testing`` it needs ``hypothesis``). Typical use::

    chain = LocalChain()
    amm = setup_amm(chain, owner, holders=[alice.address])
    send(chain, alice, *amm.add_liquidity_calls(alice.address, 10**18, 4 * 10**18))
    chain.read(amm.pair(), "getReserves")

``amm_workload(seed)`` runs a fixed pseudo-random sequence of token and AMM blocks (swaps along one
or two hops, exact-output swaps, adding and removing liquidity, donations, ``sync`` and ``skim``,
block times that jump, repeat and wrap nothing), with the protocol fee on unless told otherwise, and
returns the state root after every block: two processes running it with the same seed must print the
same roots whatever their hash seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.amm import FACTORY_CODE_ID, ROUTER_CODE_ID, pair_address
from contracts.builtin import UINT256_MAX
from contracts.testing import LocalChain, sign
from contracts.vm import DEPLOYER, contract_address, create_address
from crypto.hashing import Hash32
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519
from state.codec import Value
from state.types import Call, Receipt

AMM_GAS = 2_000_000
"""Gas limit of the helpers' transactions (a multi-hop swap with ML-DSA keys needs ~150,000)."""
FAR_DEADLINE = 2**40
"""A deadline (seconds) no test block reaches."""
WORKLOAD_FEE_TO = Address(b"\xfe" * 20)
"""The protocol fee recipient of ``amm_workload`` (an address nobody holds a key of: it only receives)."""


def send(chain: LocalChain, key: KeyPair, *calls: Call, gas_limit: int = AMM_GAS,
         timestamp: int | None = None) -> Receipt:
    """Execute one transaction of ``calls`` by ``key`` (its next nonce) as the next block; its receipt."""
    tx = sign(key, chain.chain_id, chain.nonce(key.address), calls, gas_limit)
    (receipt,) = chain.execute([tx], timestamp=timestamp)
    return receipt


def call(to: bytes, method: str, *args: Value) -> Call:
    """``Call(to, method, args)``."""
    return Call(Address(to), method, args)


def deploy_amm_calls(fee_to_setter: bytes = ZERO_ADDRESS) -> tuple[list[Call], Address, Address]:
    """The deployer calls creating a factory (fee admin ``fee_to_setter``) and its router.

    Returns (calls, factory, router); with the zero fee setter these are ``CANONICAL_FACTORY`` and
    ``CANONICAL_ROUTER`` (``node.rpc.client.deploy_amm_calls`` builds the same calls).
    """
    factory = create_address(DEPLOYER, FACTORY_CODE_ID, b"", (fee_to_setter,))
    router = create_address(DEPLOYER, ROUTER_CODE_ID, b"", (factory,))
    calls = [Call(DEPLOYER, "create", (FACTORY_CODE_ID, b"", (fee_to_setter,))),
             Call(DEPLOYER, "create", (ROUTER_CODE_ID, b"", (factory,)))]
    return calls, factory, router


@dataclass
class Amm:
    """A deployed AMM: its tokens (index order as created), factory and router."""

    tokens: list[Address]
    factory: Address
    router: Address
    owner: KeyPair
    deadline: int = FAR_DEADLINE
    extra: dict[str, Address] = field(default_factory=dict)

    def pair(self, a: int = 0, b: int = 1) -> Address:
        """The pair address of tokens ``a`` and ``b`` (whether or not it exists yet)."""
        return pair_address(self.factory, self.tokens[a], self.tokens[b])

    def approve_router_calls(self, *token_indexes: int) -> list[Call]:
        """Infinite approvals of the router for the given tokens (all if none)."""
        indexes = token_indexes or tuple(range(len(self.tokens)))
        return [call(self.tokens[i], "approve", self.router, UINT256_MAX) for i in indexes]

    def add_liquidity_calls(self, to: bytes, amount_a: int, amount_b: int, a: int = 0, b: int = 1,
                            min_a: int = 0, min_b: int = 0) -> list[Call]:
        """Approve the router for both tokens, then ``addLiquidity``."""
        return [*self.approve_router_calls(a, b),
                call(self.router, "addLiquidity", self.tokens[a], self.tokens[b], amount_a, amount_b, min_a, min_b,
                     to, self.deadline)]

    def swap_calls(self, to: bytes, amount_in: int, path: Sequence[int], min_out: int = 0) -> list[Call]:
        """Approve the router for ``path[0]``, then ``swapExactTokensForTokens`` along ``path`` (token indexes)."""
        tokens = tuple(self.tokens[i] for i in path)
        return [*self.approve_router_calls(path[0]),
                call(self.router, "swapExactTokensForTokens", amount_in, min_out, tokens, to, self.deadline)]


def setup_amm(chain: LocalChain, owner: KeyPair, *, tokens: int = 2, supply: int = 10**30,
              holders: Sequence[bytes] = (), fee_to_setter: bytes = ZERO_ADDRESS,
              decimals: int = 18) -> Amm:
    """Deploy ``tokens`` tokens (minter ``owner``), mint ``supply`` of each to ``owner`` and every holder,
    and create a factory with its router, in one block. Returns the ``Amm``.

    Raises ``AssertionError`` if the setup transaction reverts.
    """
    nonce = chain.nonce(owner.address)
    calls: list[Call] = []
    addresses: list[Address] = []
    for i in range(tokens):
        calls.append(Call(DEPLOYER, "deploy", ("token/v1", (f"Token {i}", f"T{i}", decimals, owner.address))))
        addresses.append(contract_address(owner.address, nonce, i))
    for token in addresses:
        for holder in (owner.address, *holders):
            calls.append(call(token, "mint", holder, supply))
    amm_calls, factory, router = deploy_amm_calls(fee_to_setter)
    if chain.get(b"\x02" + factory) is None:
        calls.extend(amm_calls)
    receipt = send(chain, owner, *calls, gas_limit=50_000_000)
    if receipt.status != 1:
        raise AssertionError(f"AMM setup reverted: {receipt.revert_reason}")
    return Amm(addresses, factory, router, owner)


def _workload_tx(rng: random.Random, amm: Amm, keys: Sequence[KeyPair]) -> tuple[int, list[Call]]:
    """One random operation: (actor index, calls)."""
    actor = rng.randrange(len(keys))
    me = keys[actor].address
    kind = rng.choice(("swap", "swap", "swap", "swapOut", "add", "remove", "donate", "transfer"))
    n = len(amm.tokens)
    a = rng.randrange(n)
    b = (a + 1 + rng.randrange(n - 1)) % n
    size = rng.choice((1, 10**3, 10**15, 10**18, 10**21, 10**24))
    amount = rng.randrange(1, size + 1)
    if kind == "swap":
        path = [a, b] if rng.random() < 0.6 else [a, b, (b + 1 + rng.randrange(n - 1)) % n]
        if len(set(path)) != len(path):
            path = [a, b]
        return actor, amm.swap_calls(me, amount, path, min_out=rng.choice((0, 0, amount)))
    if kind == "swapOut":
        tokens = (amm.tokens[a], amm.tokens[b])
        return actor, [*amm.approve_router_calls(a),
                       call(amm.router, "swapTokensForExactTokens", amount, rng.choice((amount * 2, UINT256_MAX)),
                            tokens, me, amm.deadline)]
    if kind == "add":
        other = rng.randrange(1, size + 1)
        return actor, amm.add_liquidity_calls(me, amount, other, a, b, min_a=rng.choice((0, amount // 2)))
    if kind == "remove":
        pair = amm.pair(a, b)
        return actor, [call(pair, "approve", amm.router, UINT256_MAX),
                       call(amm.router, "removeLiquidity", amm.tokens[a], amm.tokens[b], amount, 0, 0, me,
                            amm.deadline)]
    if kind == "donate":
        pair = amm.pair(a, b)
        settle = call(pair, "sync") if rng.random() < 0.5 else call(pair, "skim", me)
        return actor, [call(amm.tokens[a], "transfer", pair, amount), settle]
    return actor, [call(amm.tokens[a], "transfer", keys[rng.randrange(len(keys))].address, amount)]


def amm_workload(seed: int, *, accounts: int = 4, tokens: int = 3, blocks: int = 8,
                 txs_per_block: int = 8, protocol_fee: bool = True) -> tuple[LocalChain, list[Hash32]]:
    """Run a fixed pseudo-random AMM workload chosen by ``seed``; returns the chain and the root after each block.

    Keys are Ed25519 from seeded bytes and block times advance by 0 to 40 seconds, so the roots
    depend on ``seed`` only. Block 1 deploys the tokens, factory and router and funds every
    account; block 2 turns the protocol fee on (``setFeeTo(WORKLOAD_FEE_TO)`` by the factory's fee
    setter, the first account; not with ``protocol_fee=False``, which uses the canonical factory)
    and seeds every pool; later blocks hold ``txs_per_block`` random operations, some of which revert.
    Raises ``AssertionError`` if the setup or seeding block reverts.
    """
    rng = random.Random(seed)
    keys = [KeyPair.from_private(ED25519.tag, rng.randbytes(32)) for _ in range(accounts)]
    chain = LocalChain()
    amm = setup_amm(chain, keys[0], tokens=tokens, supply=10**27, holders=[k.address for k in keys[1:]],
                    fee_to_setter=keys[0].address if protocol_fee else ZERO_ADDRESS)
    roots = [chain.state_root()]
    seed_calls: list[Call] = [call(amm.factory, "setFeeTo", WORKLOAD_FEE_TO)] if protocol_fee else []
    for a in range(tokens):
        for b in range(a + 1, tokens):
            seed_calls += amm.add_liquidity_calls(keys[0].address, 10**24 * (a + 1), 10**24 * (b + 2), a, b)
    receipt = send(chain, keys[0], *seed_calls, gas_limit=50_000_000)
    if receipt.status != 1:
        raise AssertionError(f"AMM workload seeding reverted: {receipt.revert_reason}")
    roots.append(chain.state_root())
    nonces = [chain.nonce(k.address) for k in keys]
    for _ in range(blocks):
        txs = []
        for _ in range(txs_per_block):
            actor, calls = _workload_tx(rng, amm, keys)
            txs.append(sign(keys[actor], chain.chain_id, nonces[actor], calls, AMM_GAS))
            nonces[actor] += 1
        chain.execute(txs, timestamp=chain.timestamp + rng.choice((0, 1, 1, 13, 40)))
        roots.append(chain.state_root())
    return chain, roots
