"""The VM core (``contracts.vm``): calls between contracts, msg.sender, depth, nested reverts, create,
locks, the block gas limit, and the exact size function behind event gas."""

from __future__ import annotations

import argparse
import ast
import io
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import contracts
from contracts import gas as G
from contracts.amm import babylonian_sqrt
from contracts.builtin import Addr, AddrList, BuiltinContract, Uint, method
from contracts.encoding import decode_stored, encode_stored, encoded_size, event_size
from contracts.exceptions import Revert, TxRejected
from contracts.registry import default_vm
from contracts.testing import LocalChain, sign
from contracts.testing_amm import call, send
from contracts.vm import DEPLOYER, CallContext, Overlay, code_key, create_address, storage_key
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519
from state.codec import Value, decode_value, encode
from state.exceptions import DecodeError
from state.types import STATUS_REVERTED, STATUS_SUCCESS, Call, Event, Receipt

ALICE, BOB = KeyPair.generate(ED25519), KeyPair.generate(ED25519)
A, B = ALICE.address, BOB.address


class Probe(BuiltinContract):
    """A contract exercising the VM: who called, recursion, writes then reverts, caught reverts, create."""

    CODE_ID = "test/probe"
    LOCKED_REASON = "probe: locked"

    @method()
    def init(self, ctx: CallContext) -> None:
        """Remember the creator."""
        ctx.store(b"creator", ctx.caller)

    @method(readonly=True)
    def whoami(self, ctx: CallContext) -> tuple[bytes, bytes, bytes]:
        """(caller, origin, self)."""
        return ctx.caller, ctx.origin, ctx.contract

    @method(Addr, str)
    def relay(self, ctx: CallContext, to: bytes, name: str) -> Value:
        """Call ``to.name()`` as this contract."""
        return ctx.call(to, name, ())

    @method(Uint)
    def recurse(self, ctx: CallContext, n: int) -> int:
        """Call itself ``n`` more times; returns the depth reached."""
        if n == 0:
            return ctx.depth
        return ctx.call(ctx.contract, "recurse", (n - 1,))  # type: ignore[no-any-return]

    @method(Uint)
    def write_then_revert(self, ctx: CallContext, value: int) -> None:
        """Write, emit, then revert."""
        ctx.store(b"x", value)
        ctx.emit("Wrote", (), (value,))
        raise Revert("changed my mind")

    @method(Addr)
    def try_child(self, ctx: CallContext, child: bytes) -> str:
        """Call ``child.write_then_revert`` and swallow its revert; then write and emit here."""
        try:
            ctx.call(child, "write_then_revert", (7,))
        except Revert as err:
            ctx.store(b"caught", err.reason)
        ctx.emit("After", (), ())
        return "done"

    @method(bytes)
    def spawn(self, ctx: CallContext, salt: bytes) -> bytes:
        """Create another probe with ``salt``."""
        return ctx.create(Probe.CODE_ID, salt, ())

    @method(lock=True)
    def locked_reenter(self, ctx: CallContext) -> None:
        """Call itself while holding the lock."""
        ctx.call(ctx.contract, "locked_reenter", ())

    @method(Uint, lock=True)
    def locked_count(self, ctx: CallContext, n: int) -> int:
        """Hold the lock and count."""
        ctx.store(b"n", (ctx.load(b"n") or 0) + n)
        return n

    @method(AddrList, readonly=True)
    def count(self, ctx: CallContext, items: tuple[bytes, ...]) -> int:
        """How many addresses were passed."""
        return len(items)

    @method(readonly=True)
    def sneaky_event(self, ctx: CallContext) -> None:
        """A read-only method that emits (refused in a query)."""
        ctx.emit("Nope", (), ())

    @method()
    def divide_by_zero(self, ctx: CallContext) -> int:
        """A contract bug: divides by zero."""
        return 1 // (ctx.load(b"zero") or 0)


def probe_chain(**kwargs: int | None) -> tuple[LocalChain, Address, Address]:
    chain = LocalChain(vm=default_vm((Probe,)), **kwargs)  # type: ignore[arg-type]
    receipt = send(chain, ALICE, Call(DEPLOYER, "deploy", (Probe.CODE_ID, ())),
                   Call(DEPLOYER, "deploy", (Probe.CODE_ID, ())), gas_limit=300_000)
    assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
    return chain, receipt.output[0], receipt.output[1]


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
    return receipt


def test_msg_sender_is_the_calling_contract() -> None:
    chain, p, q = probe_chain()
    assert chain.get(storage_key(p, b"creator")) == encode(A)
    assert ok(send(chain, BOB, call(p, "whoami"))).output == ((B, B, p),)
    assert ok(send(chain, BOB, call(p, "relay", q, "whoami"))).output == ((p, B, q),)
    with pytest.raises(Revert, match="relay is not a read-only method"):
        chain.read(p, "relay", q, "whoami", sender=B)


def test_call_depth_is_limited() -> None:
    chain, p, _ = probe_chain()
    assert ok(send(chain, BOB, call(p, "recurse", G.MAX_CALL_DEPTH - 1))).output == (G.MAX_CALL_DEPTH,)
    receipt = send(chain, BOB, call(p, "recurse", G.MAX_CALL_DEPTH))
    assert (receipt.status, receipt.revert_reason) == (STATUS_REVERTED, "call depth exceeded")


def test_a_caught_revert_undoes_the_callees_writes_and_events() -> None:
    chain, p, q = probe_chain()
    receipt = ok(send(chain, BOB, call(p, "try_child", q)))
    assert receipt.output == ("done",)
    assert receipt.events == (Event(p, "After", (), ()),)  # q's "Wrote" event is gone with its write
    assert chain.get(storage_key(q, b"x")) is None
    assert chain.get(storage_key(p, b"caught")) == encode("changed my mind")


def test_create_addresses_and_collisions() -> None:
    chain, p, _ = probe_chain()
    receipt = ok(send(chain, BOB, call(p, "spawn", b"one")))
    child = receipt.output[0]
    assert child == create_address(p, Probe.CODE_ID, b"one", ())
    assert chain.get(code_key(child)) == encode(Probe.CODE_ID)
    assert chain.get(storage_key(child, b"creator")) == encode(p)  # init's caller is the creator
    receipt = send(chain, BOB, call(p, "spawn", b"one"))
    assert receipt.revert_reason == "contract address already in use"
    # the deployer's create: the address ignores the sender; init runs with the deployer as caller
    by_deployer = ok(send(chain, BOB, Call(DEPLOYER, "create", (Probe.CODE_ID, b"s", ())))).output[0]
    assert by_deployer == create_address(DEPLOYER, Probe.CODE_ID, b"s", ())
    assert chain.get(storage_key(by_deployer, b"creator")) == encode(ZERO_ADDRESS)
    too_long = send(chain, BOB, Call(DEPLOYER, "create", (Probe.CODE_ID, b"s" * 65, ())))
    assert too_long.revert_reason.startswith("the deployer takes deploy")


def test_lock_refuses_reentry_and_is_released() -> None:
    chain, p, _ = probe_chain()
    receipt = send(chain, BOB, call(p, "locked_reenter"))
    assert (receipt.status, receipt.revert_reason) == (STATUS_REVERTED, "probe: locked")
    # the lock does not outlive its call: two locked calls in a row in one transaction both run
    receipt = ok(send(chain, BOB, call(p, "locked_count", 2), call(p, "locked_count", 3)))
    assert receipt.output == (2, 3) and chain.get(storage_key(p, b"n")) == encode(5)
    # nor a revert: a failed transaction leaves no lock behind for the next one in the block
    txs = [sign(BOB, chain.chain_id, chain.nonce(B), [call(p, "locked_reenter")], 200_000),
           sign(BOB, chain.chain_id, chain.nonce(B) + 1, [call(p, "locked_count", 1)], 200_000)]
    first, second = chain.execute(txs)
    assert (first.status, second.status) == (STATUS_REVERTED, STATUS_SUCCESS)


def test_read_only_queries_cannot_emit_and_contract_bugs_revert() -> None:
    chain, p, _ = probe_chain()
    with pytest.raises(Revert, match="state change in a read-only call"):
        chain.read(p, "sneaky_event")
    receipt = send(chain, BOB, call(p, "divide_by_zero"))
    assert (receipt.status, receipt.revert_reason) == (STATUS_REVERTED, "division by zero")
    assert chain.read(p, "count", (A, B, A)) == 3
    with pytest.raises(Revert, match=r"count takes \(AddrList\)"):
        chain.read(p, "count", (A,) * 33)


def test_block_gas_limit() -> None:
    chain, p, _ = probe_chain(block_gas_limit=400_000)
    txs = [sign(k, chain.chain_id, chain.nonce(k.address), [call(p, "whoami")], 200_000) for k in (ALICE, BOB)]
    receipts = chain.execute(txs)  # exactly at the limit
    assert [r.status for r in receipts] == [STATUS_SUCCESS, STATUS_SUCCESS]
    txs = [sign(k, chain.chain_id, chain.nonce(k.address), [call(p, "whoami")], g)
           for k, g in ((ALICE, 200_000), (BOB, 200_001))]
    before, height = dict(chain.state), chain.height
    with pytest.raises(TxRejected) as info:
        chain.execute(txs)
    assert info.value.reason == "block gas limit exceeded"
    assert (chain.state, chain.height) == (before, height)


def test_overlay_journal() -> None:
    state = {b"k": encode(1)}
    overlay = Overlay(state.get)
    assert overlay.load(b"k") == 1 and overlay.load(b"absent") is None
    mark = overlay.checkpoint()
    overlay.store(b"k", 2)
    overlay.store(b"new", (b"x", 3))
    overlay.store(b"k", None)
    assert overlay.writes == {b"k": None, b"new": encode((b"x", 3))}
    overlay.revert_to(mark)
    assert overlay.writes == {} and overlay.load(b"k") == 1 and overlay.load(b"new") is None
    overlay.put(b"b", encode(5))
    overlay.put(b"a", None)
    overlay.commit()
    overlay.revert_to(0)  # nothing to undo after commit
    assert list(overlay.writes) == [b"a", b"b"] and overlay.get(b"b") == encode(5)


profile_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**511), max_value=2**512 - 1)
    | st.binary(max_size=300) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=20).map(tuple), max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(profile_values)
def test_hot_path_codec_agrees_with_state_codec(value: Value) -> None:
    raw = encode(value)
    assert encoded_size(value) == len(raw)
    assert encode_stored(value) == raw
    assert decode_stored(raw) == decode_value(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.lists(profile_values, max_size=20).map(tuple),
       st.lists(st.one_of(st.binary(min_size=20, max_size=20), st.integers(min_value=-200, max_value=2**70),
                          profile_values), max_size=18).map(tuple))
def test_event_size_is_the_length_of_the_event_encoding(name: str, topics: tuple[Value, ...],
                                                         data: tuple[Value, ...]) -> None:
    assert event_size(name, topics, data) == len(encode((name, topics, data)))


@pytest.mark.parametrize("raw", [
    b"\xca\x00\x00\x00\x00",  # float32
    b"\x81\x01\x02",  # a map
    b"\xd4\x05\x01",  # extension type 5
    b"\xd4\x01\x00",  # big integer with a leading zero byte
    b"\x92\x01\xcb\x00\x00\x00\x00\x00\x00\x00\x00",  # a float inside an array
    b"\x92\x01",  # truncated
    b"",
])
def test_decode_stored_rejects_what_is_outside_the_profile(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_stored(raw)


def test_encoded_size_rejects_what_encode_rejects() -> None:
    for bad in (1.5, {1: 2}, [set()]):
        with pytest.raises(TypeError):
            encoded_size(bad)
        with pytest.raises(TypeError):
            encode(bad)
    with pytest.raises(ValueError, match="too large"):
        encoded_size(2**512)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=2**256 - 1)))
def test_isqrt_is_v2_math_sqrt(y: int) -> None:
    assert babylonian_sqrt(y) == math.isqrt(y)


# --- determinism by construction: what the contract sources may use ------------------------------------

NONDETERMINISTIC_MODULES = frozenset({"random", "time", "datetime", "decimal", "fractions", "secrets", "os", "uuid",
                                      "sys", "threading", "asyncio", "socket"})
"""Modules whose use in the VM would bring floats, Decimal, a clock, randomness, threads, I/O or the environment."""
NONDETERMINISTIC_CALLS = frozenset({"hash", "id", "open", "print", "input"})
"""Builtins whose result depends on the process (``PYTHONHASHSEED``, memory layout) or that do I/O."""
CACHE_DECORATORS = frozenset({"lru_cache", "cache"})
"""``functools`` memoizers: state kept across calls, outside the journal and the gas meter."""
SET_TYPES = frozenset({"set", "frozenset"})
TEST_HELPERS = frozenset({"testing.py", "testing_amm.py"})
"""Modules of ``contracts`` for tests only (seeded workloads, subprocesses); the VM never imports them."""
REVIEWED_CACHES = {
    ("amm.py", "_pair_address"): "a pure function of its arguments (SHA3 of them); its callers charge HASH",
}
"""Cached functions a reviewer has checked: (file, function) -> why the cache can not change a result."""


def _cache_decorator(decorator: ast.expr) -> str | None:
    """``lru_cache``/``cache`` if ``decorator`` is one, bare or as ``functools.X``, called or not."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "functools":
        name = target.attr
    elif isinstance(target, ast.Name):
        name = target.id
    else:
        return None
    return name if name in CACHE_DECORATORS else None


def _over_a_set(iterable: ast.expr) -> bool:
    """Whether a ``for`` iterates directly over a set: a literal, a comprehension, ``set(...)``/``frozenset(...)``."""
    return isinstance(iterable, ast.Set | ast.SetComp) or (
        isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id in SET_TYPES)


def nondeterminism(source: str, filename: str = "<source>") -> list[str]:
    """What ``source`` does that a contract must not, as ``file:line what`` strings.

    Banned imports (``NONDETERMINISTIC_MODULES``, the test helpers), float literals, true division,
    float()/complex, calls of ``NONDETERMINISTIC_CALLS``, ``for`` (statement or comprehension)
    directly over a set, and ``functools`` cache decorators except on ``REVIEWED_CACHES``.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{filename}:{node.lineno} imports {n}" for n in names  # type: ignore[attr-defined]
                  if n.split(".")[0] in NONDETERMINISTIC_MODULES or n.startswith("contracts.testing")]
        if isinstance(node, ast.Constant) and type(node.value) in (float, complex):
            found.append(f"{filename}:{node.lineno} float literal {node.value!r}")
        if isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div):
            found.append(f"{filename}:{node.lineno} true division")
        if isinstance(node, ast.Name) and node.id in ("float", "complex"):
            found.append(f"{filename}:{node.lineno} uses {node.id}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NONDETERMINISTIC_CALLS:
            found.append(f"{filename}:{node.lineno} calls {node.func.id}()")
        if isinstance(node, ast.For | ast.AsyncFor) and _over_a_set(node.iter):
            found.append(f"{filename}:{node.lineno} iterates over a set")
        if isinstance(node, ast.comprehension) and _over_a_set(node.iter):
            found.append(f"{filename}:{node.iter.lineno} iterates over a set")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                cache = _cache_decorator(decorator)
                if cache is not None and (filename, node.name) not in REVIEWED_CACHES:
                    found.append(f"{filename}:{decorator.lineno} caches {node.name} with {cache}")
    return found


SCAN_CASES = [
    ("import os.path", "imports os.path"),
    ("from time import time", "imports time"),
    ("from decimal import Decimal", "imports decimal"),
    ("import uuid, json", "imports uuid"),
    ("import sys", "imports sys"),
    ("from threading import Lock", "imports threading"),
    ("import asyncio", "imports asyncio"),
    ("import socket", "imports socket"),
    ("from contracts.testing import LocalChain", "imports contracts.testing"),
    ("x = 1.5", "float literal 1.5"),
    ("y = 3 / 2", "true division"),
    ("y /= 2", "true division"),
    ("z = float(3)", "uses float"),
    ("h = hash(b'k')", "calls hash()"),
    ("i = id(object())", "calls id()"),
    ("f = open('x')", "calls open()"),
    ("print(1)", "calls print()"),
    ("s = input()", "calls input()"),
    ("for k in {1, 2}:\n    pass", "iterates over a set"),
    ("for k in set(keys):\n    pass", "iterates over a set"),
    ("for k in frozenset(keys):\n    pass", "iterates over a set"),
    ("for k in {k for k in keys}:\n    pass", "iterates over a set"),
    ("out = [k for k in set(keys)]", "iterates over a set"),
    ("@functools.lru_cache(maxsize=8)\ndef f(x):\n    return x", "caches f with lru_cache"),
    ("@functools.cache\ndef f(x):\n    return x", "caches f with cache"),
    ("@lru_cache\ndef f(x):\n    return x", "caches f with lru_cache"),
    ("@cache\ndef f(x):\n    return x", "caches f with cache"),
]


@pytest.mark.parametrize(("snippet", "what"), SCAN_CASES)
def test_the_scan_finds_what_it_looks_for(snippet: str, what: str) -> None:
    assert nondeterminism(snippet) == [f"<source>:1 {what}"]


def test_the_scan_passes_what_is_allowed() -> None:
    fine = ("import math\nimport functools\nfrom contracts.vm import VM\nx = 7 // 2\ny = 1_000\ns = 'a/b 1.5'\n"
            "for k in sorted({1, 2}):\n    pass\nout = [k for k in sorted(set(keys))]\nn = len({1, 2})\n"
            "@functools.wraps(g)\ndef f(x):\n    return x\nh = ctx.hash(b'k')\n")
    assert nondeterminism(fine) == []
    cached = "@functools.lru_cache(maxsize=4096)\ndef _pair_address(a):\n    return a\n"
    assert nondeterminism(cached, "amm.py") == []  # reviewed (REVIEWED_CACHES) ...
    assert nondeterminism(cached, "token.py") == ["token.py:1 caches _pair_address with lru_cache"]  # ... only there


def test_contract_sources_use_nothing_nondeterministic() -> None:
    root = Path(contracts.__file__).parent
    sources = sorted(p for p in root.glob("*.py") if p.name not in TEST_HELPERS)
    assert {"abc.py", "vm.py", "builtin.py", "token.py", "amm.py", "gas.py"} <= {p.name for p in sources}
    found = [hit for p in sources for hit in nondeterminism(p.read_text(), p.name)]
    assert found == []
    for (name, function), _why in REVIEWED_CACHES.items():  # an exemption whose function is gone must go too
        assert f"def {function}(" in (root / name).read_text(), (name, function)


# --- the benchmark -----------------------------------------------------------------------------------------


def test_bench_vm_smoke(tmp_path: Path) -> None:
    from devnet.bench_vm import add_arguments, run_bench_vm

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--accounts", "4", "--transfers", "6", "--swaps", "4", "--block-txs", "3",
                              "--dir", str(tmp_path)])
    out = io.StringIO()
    assert run_bench_vm(args, Console(file=out, width=250, color_system=None)) == 0
    text = out.getvalue()
    assert "signatures already checked, no consensus" in text
    for unit in ("transfers/s", "swaps/s"):
        for label in ("goal figure, execution on the state store", "with state root and commit"):
            m = re.search(rf"{label}\s+([\d,]+) {unit}", text)
            assert m is not None, (label, unit, text)
            assert int(m.group(1).replace(",", "")) > 0
    gas = [int(g.replace(",", "")) for g in re.findall(r"gas per operation ([\d,]+) \(intrinsic", text)]
    assert len(gas) == 2 and all(g > G.TX_BASE for g in gas), text
    assert list(tmp_path.iterdir()) == []  # the LevelDB directory is removed
