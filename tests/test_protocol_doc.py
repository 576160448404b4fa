"""docs/protocol.md and docs/example_tx.json agree with the code, value for value.

Every table or block of the page that states a fact of the protocol sits under a marker comment
``<!-- check:NAME -->``; each test here reads one of them and recomputes what it says from the node's
own modules (codec, structs, schemes, gas table, VM, vote bytes). The worked example is rebuilt from
the seed and body written on the page, its signature checked by our verifier and by pqcrypto's
independent ML-DSA, and the transactions are executed in the VM to check the receipt.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pqcrypto
import pytest
from Crypto.PublicKey import MLDSA
from Crypto.Signature import mldsa
from pqcrypto.sign import ml_dsa_44 as pq_ml_dsa_44

from consensus.messages import COMMIT, vote_signing_bytes
from contracts import gas as G
from contracts import vm as V
from contracts.exceptions import Revert
from contracts.registry import default_vm
from contracts.testing import LocalChain, sign
from contracts.vm import DEPLOYER, BlockEnv, Overlay, contract_address
from crypto.hashing import Hash32, sha3
from crypto.keys import Address, KeyPair, address_of
from crypto.signatures import ED25519, Context, scheme_by_tag
from node.rpc import jsonfmt
from node.rpc.client import deploy_token_call, transfer_call
from state import proof as state_proof
from state import types as T
from state.codec import Value, decode_value, encode
from state.exceptions import DecodeError
from state.jmt import JellyfishState, root_of
from state.kv import MemoryStore
from state.tree import EMPTY_ROOT, merkle_root
from state.types import Call, Transaction, TxBody

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "protocol.md"
EXAMPLE_JSON = REPO / "docs" / "example_tx.json"


# --- reading the page -----------------------------------------------------------------------------


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def prose() -> str:
    """The page with every run of whitespace made one space (phrases may wrap across lines)."""
    return " ".join(doc_text().split())


def block(name: str) -> list[str]:
    """The lines under ``<!-- check:name -->``: a fenced block's content, else up to a blank line."""
    lines = doc_text().splitlines()
    marker = f"<!-- check:{name} -->"
    assert lines.count(marker) == 1, f"docs/protocol.md must hold {marker} exactly once"
    rest = lines[lines.index(marker) + 1 :]
    if rest[0].startswith("```"):
        return rest[1 : rest.index("```", 1)]
    out = []
    for line in rest:
        if not line.strip():
            break
        out.append(line)
    assert out, f"nothing under {marker}"
    return out


def table(name: str) -> list[list[str]]:
    """The body rows of the Markdown table under the marker, as stripped cells."""
    rows = block(name)
    assert re.fullmatch(r"\|( *-+ *\|)+", rows[1].replace(" ", "")), f"{name}: not a table"
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows[2:]]


def code(cell: str) -> str:
    """The text of a cell written as one code span."""
    m = re.fullmatch(r"`([^`]*)`", cell)
    assert m, f"expected a single `code` cell, got {cell!r}"
    return m.group(1)


def keyed(name: str) -> dict[str, str]:
    """A two-column ``| item | `value` |`` table as a dict."""
    rows = table(name)
    out = {label: code(value) for label, value in rows}
    assert len(out) == len(rows), f"{name}: duplicate items"
    return out


def check_hex(shown: str, actual: bytes) -> None:
    """``shown`` is the full hex of ``actual`` or an abbreviation ``<prefix>…(N bytes)``."""
    m = re.fullmatch(r"([0-9a-f]+)…\((\d+) bytes\)", shown)
    if m is None:
        assert shown == actual.hex()
    else:
        assert actual.hex().startswith(m.group(1)) and len(actual) == int(m.group(2)), (shown, actual.hex())


_NAMES: dict[str, Any] = {"None": None, "True": True, "False": False}
_FUNCS = {"range": range, "tuple": tuple}
_OPS: dict[type, Any] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Pow: lambda a, b: a**b,
}


def literal(text: str) -> Any:
    """Evaluate the small Python expressions of the vector table (literals, + - * **, range)."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in _NAMES:
            return _NAMES[node.id]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    return ev(ast.parse(text, mode="eval").body)


# --- section 1: encoding ----------------------------------------------------------------------------


def test_encoding_vectors() -> None:
    rows = table("encoding-vectors")
    assert len(rows) >= 20
    kinds = set()
    for value_text, shown in rows:
        value = literal(code(value_text))
        encoded = encode(value)
        check_hex(code(shown), encoded)
        decoded = decode_value(encoded)
        assert decoded == value and type(decoded) is type(value)
        kinds.add(type(value))
    assert kinds == {int, bool, type(None), bytes, str, tuple}
    ints = [literal(code(v)) for v, _ in rows if type(literal(code(v))) is int]
    assert max(ints) >= 2**64 and min(ints) < -(2**63), "both big-integer extension types have a vector"


def test_rejected_vectors() -> None:
    rows = table("rejected-vectors")
    assert len(rows) >= 10
    for shown, _why in rows:
        with pytest.raises(DecodeError):
            decode_value(bytes.fromhex(code(shown)))


def test_nesting_limit_is_as_documented() -> None:
    assert "at most 64 arrays deep" in prose()
    assert decode_value(b"\x91" * 63 + b"\x90") is not None  # 64 arrays
    with pytest.raises(DecodeError):
        decode_value(b"\x91" * 64 + b"\x90")  # 65 arrays
    assert f"at most {T.MAX_TX_SIZE:,} bytes" in prose()


# --- sections 2, 3, 6: schemes, contexts, gas --------------------------------------------------------


def test_scheme_table() -> None:
    rows = table("schemes")
    assert len(rows) == 4
    for tag, name, _standard, pk_len, sig_len in rows:
        scheme = scheme_by_tag(int(tag))
        assert (scheme.name, scheme.public_key_len, scheme.signature_len) == (name, int(pk_len), int(sig_len))


def test_context_table() -> None:
    expected = {"transaction": Context.TRANSACTION, "consensus vote": Context.CONSENSUS,
                "P2P handshake": Context.HANDSHAKE}
    rows = table("contexts")
    assert {r[0] for r in rows} == set(expected)
    for purpose, ascii_text, hex_text, length in rows:
        ctx = expected[purpose]
        assert code(ascii_text).encode() == ctx
        assert bytes.fromhex(code(hex_text)) == ctx
        assert int(length) == len(ctx)


def test_gas_table() -> None:
    rows = table("gas")
    for name, value, _meaning in rows:
        assert getattr(G, code(name)) == int(value), name
    assert {code(r[0]) for r in rows} >= {"TX_BASE", "TX_BYTE", "CALL", "DEPLOY", "SLOAD", "SSTORE", "LOG",
                                           "LOG_BYTE", "MAX_TX_GAS", "DEFAULT_BLOCK_GAS_LIMIT"}
    assert G.intrinsic_gas(1000) == G.TX_BASE + G.TX_BYTE * 1000


# --- section 7: state keys and the deployer's upload ------------------------------------------------


def test_state_key_prefixes() -> None:
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
            for row in block("state-keys")[2:]]
    documented = []
    for key, _value in rows:
        m = re.fullmatch(r"0x([0-9a-f]{2}) \|\| (.+)", code(key))
        assert m, key
        documented.append((bytes.fromhex(m.group(1)), m.group(2)))
    assert documented == [(V.NONCE_PREFIX, "address"), (V.CODE_PREFIX, "address"),
                          (V.STORAGE_PREFIX, "address || slot"), (V.UPLOADED_CODE_PREFIX, "code id (UTF-8)")]
    assert [p for p, _ in documented] == [b"\x01", b"\x02", b"\x03", b"\x04"]
    address, slot = Address(bytes(range(20))), b"slot"
    assert V.nonce_key(address) == b"\x01" + address and V.code_key(address) == b"\x02" + address
    assert V.storage_key(address, slot) == b"\x03" + address + slot
    assert V.uploaded_code_key("wasm/é") == b"\x04" + "wasm/é".encode()
    for meaning in ("`feeTo` → address", "`p + token0 + token1` → pair", "`cfg` → `[factory, token0, token1]`",
                    "`kLast` → int", "**router** (`amm-router/v1`): `factory` → address"):
        assert meaning in prose(), meaning
    sources = (REPO / "contracts" / "token.py").read_text() + (REPO / "contracts" / "amm.py").read_text()
    for slot in ("meta", "supply", "minter", "feeTo", "feeToSetter", "cfg", "res", "cum", "kLast", "factory"):
        assert f"`{slot}` →" in prose() and f'b"{slot}"' in sources, slot
    for reason in ("mint to the zero address", "transfer to the zero address", "burn from the zero address"):
        assert f"`{reason}`" in prose() and f'"{reason}"' in sources, reason


def test_upload_is_as_documented() -> None:
    text = prose()
    assert f"`MAX_CODE_SIZE` = {V.MAX_CODE_SIZE:,} bytes" in text
    assert f"`code must be 1..{V.MAX_CODE_SIZE} bytes, got N`" in text
    assert f"`SLOAD + SSTORE × ceil(len(code) / 32)` ({G.SLOAD} + {G.SSTORE} per 32-byte word)" in text
    assert "upload(kind: str, code: bytes)" in V.DEPLOYER_USAGE
    chain = LocalChain(vm=default_vm())
    key = KeyPair.generate(ED25519)

    def upload(code_bytes: bytes) -> tuple[T.Receipt, int]:
        """The reverted receipt of an upload transaction and that transaction's intrinsic gas."""
        tx = sign(key, chain.chain_id, chain.nonce(key.address), [Call(DEPLOYER, "upload", ("wasm", code_bytes))],
                  1_000_000)
        (receipt,) = chain.execute([tx])
        assert receipt.status == T.STATUS_REVERTED
        return receipt, G.intrinsic_gas(len(tx.signing_bytes))

    # the built-in engine takes no code: charged the documented gas, then reverts
    receipt, intrinsic = upload(bytes(100))
    assert receipt.revert_reason == "no engine takes code of kind 'wasm'"
    assert receipt.gas_used == intrinsic + G.CALL + G.SLOAD + G.SSTORE * 4  # ceil(100 / 32) words
    receipt, intrinsic = upload(bytes(V.MAX_CODE_SIZE + 1))
    assert receipt.revert_reason == f"code must be 1..{V.MAX_CODE_SIZE} bytes, got {V.MAX_CODE_SIZE + 1}"
    assert receipt.gas_used == intrinsic + G.CALL  # the size is checked before the charge
    too_big = bytes(V.MAX_CODE_SIZE + 1)
    assert not any(k.startswith(V.UPLOADED_CODE_PREFIX) for k in chain.state)
    with pytest.raises(Revert, match="upload in a read-only call"):
        chain.read(DEPLOYER, "upload", "wasm", too_big)  # checked before the size


# --- struct layouts ---------------------------------------------------------------------------------

STRUCTS = ["Call", "TxBody", "Transaction", "Receipt", "Event", "BlockHeader", "Genesis", "Validator", "Param",
           "CommitCertificate", "ValidatorSignature", "StateProof", "ProofLevel", "ProofLeaf"]


def _type_name(annotation: Any) -> str:
    if annotation is Value:
        return "value"
    if annotation is Address:
        return "Address"
    if annotation is Hash32:
        return "Hash32"
    if annotation in (int, str, bytes, bool):
        return annotation.__name__
    if get_origin(annotation) is tuple:
        return "array of " + _type_name(get_args(annotation)[0])
    if type(None) in get_args(annotation):
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        return _type_name(inner) + " or nil"
    if isinstance(annotation, type):
        return annotation.__name__
    raise AssertionError(f"no documented name for {annotation!r}")


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_tables(name: str) -> None:
    cls = getattr(T, name, None) or getattr(state_proof, name)
    hints = get_type_hints(cls)
    rows = table(f"struct:{name}")
    documented = [(int(i), code(field), typ) for i, field, typ, _meaning in rows]
    actual = [(i, f.name, _type_name(hints[f.name])) for i, f in enumerate(dataclasses.fields(cls))]
    assert documented == actual


def test_every_struct_table_is_checked() -> None:
    found = set(re.findall(r"<!-- check:struct:(\w+) -->", doc_text()))
    assert found == set(STRUCTS)


# --- sections 7 and 9: call encodings, vote bytes, Merkle roots ---------------------------------------


def _indented_hex(name: str, label: str) -> bytes:
    text = " ".join(block(name))
    m = re.search(rf"{label} = 0x([0-9a-f]+)", text)
    assert m, f"{name}: no '{label} = 0x…'"
    return bytes.fromhex(m.group(1))


def test_call_encodings(example: dict[str, Any]) -> None:
    sender, token = example["address"], example["token"]
    deploy = deploy_token_call("Example Dollar", "EXD", 6, sender)
    assert deploy.to == DEPLOYER
    assert _indented_hex("call:deploy", "encode") == encode(deploy)
    assert _indented_hex("call:mint", "encode") == encode(Call(Address(token), "mint", (sender, 1_000_000_000)))


def test_vote_signing_bytes(example: dict[str, Any]) -> None:
    block_hash = sha3(b"example block")
    assert f"block hash `0x{block_hash.hex()}`" in prose()
    shown = bytes.fromhex("".join(block("vote-bytes")).strip().removeprefix("0x"))
    assert shown == vote_signing_bytes(example["chain_id"], COMMIT, 0, 7, block_hash, 2)
    assert COMMIT == 3


def test_merkle_root_rules() -> None:
    assert f"`0x{EMPTY_ROOT.hex()}`" in doc_text() and EMPTY_ROOT == sha3(b"")
    a, b, c = (sha3(bytes([i])) for i in range(3))
    assert merkle_root([a]) == a
    assert merkle_root([a, b, c]) == sha3(b"\x01" + sha3(b"\x01" + a + b) + c)


def _state_root_from_the_text(contents: dict[bytes, bytes]) -> bytes:
    """The state root as section 9.3 words it, written out from the page (not from ``state.jmt``)."""

    def root(items: list[tuple[str, bytes, bytes]], depth: int) -> bytes:
        if len(items) == 1:
            return sha3(b"QENEX/v1/jmt/leaf" + items[0][1] + items[0][2])
        bitmap, hashes = 0, b""
        for i in range(16):
            group = [it for it in items if int(it[0][depth], 16) == i]
            if group:
                bitmap |= 1 << i
                hashes += root(group, depth + 1)
        return sha3(b"QENEX/v1/jmt/node" + bitmap.to_bytes(2, "big") + hashes)

    items = [(sha3(k).hex(), sha3(k), sha3(v)) for k, v in contents.items()]
    return root(items, 0) if items else sha3(b"")


def test_state_hashing_rules() -> None:
    text = "\n".join(block("state-hashing"))
    assert state_proof.LEAF_DOMAIN.decode() in text and state_proof.INTERNAL_DOMAIN.decode() in text
    assert state_proof.EMPTY_ROOT == EMPTY_ROOT == sha3(b"")
    assert "retention_versions" in prose() and "newest 1000 heights" in prose()
    from node.config import StateSection

    assert StateSection().retention_versions == 1000


def test_state_example(example: dict[str, Any]) -> None:
    state = example["state"]
    rows = keyed("state-example")
    [key_label] = [label for label in rows if label.startswith("key =")]
    key = bytes.fromhex(rows[key_label].removeprefix("0x"))
    assert key == b"\x03" + example["token"] + b"b" + example["recipient"]
    assert len(state) == 7 and state[key] == encode(example["amount"]) == bytes.fromhex("ce002625a0")
    store = MemoryStore()
    tree = JellyfishState(store)
    for updates in ({}, state):
        root, ops = tree.prepare(updates, tree.version + 1)
        store.write(ops)
        tree.applied(root)
    value, proof = tree.prove(key)
    assert value == state[key]
    state_proof.verify_proof(tree.root, key, value, proof)
    encoded = proof.encode()
    levels = ", ".join(f"0x{lv.bitmap:04x} ({len(lv.siblings)} sibling{'s' if len(lv.siblings) != 1 else ''})"
                       for lv in proof.levels)
    assert rows == {
        key_label: "0x" + key.hex(),
        "key hash": "0x" + sha3(key).hex(),
        "value hash": "0x" + sha3(value).hex(),
        "levels: bitmaps and sibling counts": levels,
        "proof length (bytes)": str(len(encoded)),
        "SHA3-256(proof)": "0x" + sha3(encoded).hex(),
        "state root": "0x" + tree.root.hex(),
    }
    assert tree.root == root_of(state) == _state_root_from_the_text(state)
    assert proof.leaf is not None and proof.leaf.key_hash == sha3(key)


# --- section 10: the worked example -------------------------------------------------------------------


def _deterministic_sign(seed: bytes, message: bytes) -> bytes:
    key = MLDSA.construct(param_set=MLDSA.ML_DSA_44, seed=seed)
    return bytes(mldsa.new(key, context=Context.TRANSACTION, deterministic=True).sign(message))


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    """The example rebuilt from the seed and body values written on the page."""
    key = keyed("example:key")
    assert key["scheme"] == "ML-DSA-44"
    seed = bytes.fromhex(key["seed ξ (private key), 32 bytes"].removeprefix("0x"))
    assert seed == bytes(range(32))
    scheme = scheme_by_tag(1)
    public_key = scheme.public_key(seed)
    address = address_of(1, public_key)

    body_rows = {code(field): value for _i, field, value in table("example:body")}
    chain_id = code(body_rows["chain_id"])
    nonce, gas_limit = int(code(body_rows["nonce"])), int(code(body_rows["gas_limit"]))
    m = re.search(r"`to` = `0x([0-9a-f]{40})`.*`method` = `(\w+)`, `args` = \[`0x([0-9a-f]{40})`, `(\d+)`\]",
                  body_rows["calls"])
    assert m, body_rows["calls"]
    token_hex, method, recipient_hex, amount = m.groups()
    token, recipient = bytes.fromhex(token_hex), bytes.fromhex(recipient_hex)
    assert method == "transfer"
    assert code(body_rows["sender"]) == "0x" + address.hex()
    assert int(code(body_rows["scheme"])) == 1

    body = TxBody(chain_id, address, nonce, gas_limit, (transfer_call(token, recipient, int(amount)),), 1,
                  public_key)
    signing_bytes = encode(body)
    signature = _deterministic_sign(seed, signing_bytes)
    tx = Transaction(body, signature)

    # the setup transaction of the text: deploy + mint at nonce 0, then the transfer
    setup = Transaction(TxBody(chain_id, address, 0, 200_000, (
        deploy_token_call("Example Dollar", "EXD", 6, address),
        Call(Address(token), "mint", (address, 1_000_000_000)),
    ), 1, public_key), b"")
    vm = default_vm()
    state: dict[bytes, bytes] = {}
    overlay = Overlay(state.get)
    env = BlockEnv(chain_id, 1, 1_700_000_000)
    setup_receipt = vm.execute_tx(overlay, env, setup)
    receipt = vm.execute_tx(overlay, env, tx)
    return {
        "key": key, "seed": seed, "public_key": public_key, "address": address, "chain_id": chain_id,
        "token": token, "recipient": recipient, "amount": int(amount), "body": body, "tx": tx,
        "signing_bytes": signing_bytes, "signature": signature, "raw": tx.encode(),
        "setup_receipt": setup_receipt, "receipt": receipt,
        "state": {k: v for k, v in overlay.writes.items() if v is not None},
    }


def test_example_key_and_address(example: dict[str, Any]) -> None:
    key, pk = example["key"], example["public_key"]
    expected_pk = bytes(MLDSA.construct(param_set=MLDSA.ML_DSA_44, seed=example["seed"]).pk)
    assert pk == expected_pk
    assert int(key["public key length"]) == len(pk) == 1312
    assert key["public key, first 32 bytes"] == "0x" + pk[:32].hex()
    assert key["SHA3-256(public key)"] == "0x" + sha3(pk).hex()
    [address_row] = [v for k, v in key.items() if k.startswith("address")]
    assert address_row == "0x" + example["address"].hex() == "0x" + sha3(b"\x01" + pk)[-20:].hex()
    assert example["token"] == contract_address(example["address"], 0, 0)


def test_example_signing_bytes(example: dict[str, Any]) -> None:
    sb = example["signing_bytes"]
    shown = bytes.fromhex("".join(block("example:signing-bytes")))
    assert shown == sb
    breakdown = b"".join(bytes.fromhex(code(hex_cell).replace(" ", "")) for hex_cell, _ in table("example:breakdown"))
    assert breakdown + example["public_key"] == sb
    assert TxBody.decode(sb) == example["body"]


def test_example_values(example: dict[str, Any]) -> None:
    sb, sig, raw, tx, receipt = (example[k] for k in ("signing_bytes", "signature", "raw", "tx", "receipt"))
    values = keyed("example:values")
    expected = {
        "signing bytes length": str(len(sb)),
        f"intrinsic gas = 10000 + 2 × {len(sb)}": str(G.intrinsic_gas(len(sb))),
        "context string (hex)": Context.TRANSACTION.hex(),
        "tx hash = SHA3-256(signing bytes)": "0x" + tx.hash.hex(),
        "signature length": str(len(sig)),
        "signature, first 32 bytes": "0x" + sig[:32].hex(),
        "signature, last 32 bytes": "0x" + sig[-32:].hex(),
        "SHA3-256(signature)": "0x" + sha3(sig).hex(),
        f"raw transaction length = 1 + {len(sb)} + 3 + {len(sig)}": str(len(raw)),
        "SHA3-256(raw transaction)": "0x" + sha3(raw).hex(),
        "receipt: gas used": str(receipt.gas_used),
        "SHA3-256(encode(receipt)) (its receipts-root leaf)": "0x" + sha3(receipt.encode()).hex(),
    }
    assert values == expected
    assert raw == b"\x92" + sb + b"\xc5\x09\x74" + sig
    assert tx.hash == sha3(sb)


def test_example_signature_verifies_twice(example: dict[str, Any]) -> None:
    tx = Transaction.decode(example["raw"], max_size=T.MAX_TX_SIZE)
    tx.verify_signature()
    pk, sb, sig = example["public_key"], example["signing_bytes"], example["signature"]
    assert pq_ml_dsa_44.verify(pk, sb, sig, context=Context.TRANSACTION) is None  # raises if invalid
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq_ml_dsa_44.verify(pk, sb, sig, context=Context.CONSENSUS)
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq_ml_dsa_44.verify(pk, sb + b"\x00", sig, context=Context.TRANSACTION)


def test_example_execution(example: dict[str, Any]) -> None:
    setup, receipt, tx = example["setup_receipt"], example["receipt"], example["tx"]
    assert setup.status == T.STATUS_SUCCESS and setup.output == (example["token"], True)
    assert f"that transaction used {setup.gas_used} gas" in prose()
    assert receipt.status == T.STATUS_SUCCESS and receipt.tx_hash == tx.hash
    assert receipt.output == (True,)
    amount, sender, recipient = example["amount"], example["address"], example["recipient"]
    assert receipt.events == (T.Event(Address(example["token"]), "Transfer", (sender, recipient), (amount,)),)
    event_bytes = len(encode(("Transfer", (sender, recipient), (amount,))))
    gas = (G.intrinsic_gas(len(example["signing_bytes"])) + G.CALL + 2 * G.SLOAD + 2 * G.SSTORE + G.LOG
           + G.LOG_BYTE * event_bytes)
    assert receipt.gas_used == gas
    assert f"8 × {event_bytes} (the {event_bytes} bytes" in prose()
    assert f'"gasUsed": {receipt.gas_used},' in prose()
    assert merkle_root([sha3(receipt.encode())]) == sha3(receipt.encode())


def test_example_json_file(example: dict[str, Any]) -> None:
    doc = json.loads(EXAMPLE_JSON.read_text())
    hexb = jsonfmt.hexb
    tx, receipt = example["tx"], example["receipt"]
    assert doc["seed"] == hexb(example["seed"])
    assert (doc["scheme"], doc["schemeTag"]) == ("ML-DSA-44", 1)
    assert doc["publicKey"] == hexb(example["public_key"])
    assert doc["address"] == hexb(example["address"])
    assert doc["context"] == hexb(Context.TRANSACTION)
    assert doc["signingBytes"] == hexb(example["signing_bytes"])
    assert doc["txHash"] == hexb(tx.hash)
    assert doc["signature"] == hexb(example["signature"])
    assert doc["raw"] == hexb(example["raw"])
    as_json = jsonfmt.tx_json(tx)
    assert doc["body"] == {
        "chainId": as_json["chainId"], "sender": as_json["from"], "nonce": as_json["nonce"],
        "gasLimit": as_json["gasLimit"], "calls": as_json["calls"], "scheme": 1, "publicKey": as_json["publicKey"],
    }
    assert as_json["raw"] == doc["raw"] and as_json["signature"] == doc["signature"]
    rj = jsonfmt.receipt_json(receipt, 2, b"\x00" * 32, 0)
    assert doc["receipt"] == {k: rj[k] for k in ("status", "gasUsed", "events", "output", "revertReason")}
    # the raw hex as a wallet sends it decodes back to the same transaction
    assert Transaction.decode(bytes.fromhex(doc["raw"][2:])) == tx
