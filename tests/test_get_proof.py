"""``qnx_getProof`` answers and the client's check of their whole chain of evidence.

certificate signatures (validator set) -> header hash -> header state root -> Merkle proof -> value.
Whatever byte of that evidence is changed, ``verify_proof_result`` refuses the answer.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.vm import storage_key
from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.exceptions import ProofRejected
from node.rpc.client import ProvenAccount, verify_proof_result
from node.rpc.server import proof_result
from node.setup import NodeKeys
from state.codec import decode_value, encode
from state.types import CommitCertificate, ValidatorSignature
from tests.test_node import CHAIN, certify, grow_chain, make_keys, make_node

SLOTS = (b"supply", b"meta", b"nothing here")


@cache
def chain() -> tuple[Any, list[NodeKeys], bytes]:
    """A 4-validator chain of 4 certified blocks (each deploys a token), its keys, and a token address."""

    async def build() -> tuple[Any, list[NodeKeys], bytes]:
        keys = make_keys(4)
        node = make_node(keys, 0)
        grow_chain(node, keys, 4)
        token = node.chain.receipts(2)[0].output[0]
        return node, keys, token

    return trio.run(build)


def validators() -> list[tuple[int, bytes]]:
    node, _, _ = chain()
    return [(v.scheme, v.public_key) for v in node.validators]


def answer(height: int = 3) -> dict[str, Any]:
    node, _, token = chain()
    return proof_result(node.chain, token, list(SLOTS), height)


def check(result: dict[str, Any], height: int | None = None) -> ProvenAccount:
    _, _, token = chain()
    return verify_proof_result(result, chain_id=CHAIN, validators=validators(), address=token,
                               storage_keys=SLOTS, height=height)


def test_a_good_answer_verifies() -> None:
    node, _, token = chain()
    for height in (2, 3, 4):
        proven = check(answer(height), height)
        assert proven.height == height and proven.state_root == node.chain.block(height).header.state_root
        assert proven.block_hash == node.chain.block(height).hash
        assert proven.code == "token/v1" and proven.nonce == 0
        assert proven.storage == {slot: node.chain.state.get(storage_key(token, slot), height) for slot in SLOTS}
        assert proven.storage[b"nothing here"] is None and proven.storage[b"meta"] is not None
        assert decode_value(proven.storage[b"meta"])[0] == "T"  # (name, symbol, decimals) of grow_chain's token
    assert node.chain.state.get(b"\x02" + token, 1) is None  # deployed in block 2: absent before
    before = verify_proof_result(proof_result(node.chain, token, [], 1), chain_id=CHAIN, validators=validators(),
                                 address=token)
    assert before.code is None and before.height == 1


def _evidence_fields(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths to every byte string of the evidence (non-null values included)."""
    paths: list[tuple[str, ...]] = [("headerRaw",), ("certificateRaw",)]
    for name in ("nonce", "code"):
        paths.append((name, "proof"))
        if result[name]["value"] is not None:
            paths.append((name, "value"))
    for i, entry in enumerate(result["storage"]):
        paths.append(("storage", str(i), "proof"))
        if entry["value"] is not None:
            paths.append(("storage", str(i), "value"))
    return paths


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path[:-1]:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    return obj


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_tampered_byte_is_refused(data: st.DataObject) -> None:
    result = copy.deepcopy(answer())
    path = data.draw(st.sampled_from(_evidence_fields(result)))
    holder = _get(result, path)
    raw = bytearray(bytes.fromhex(holder[path[-1]][2:]))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    holder[path[-1]] = "0x" + raw.hex()
    with pytest.raises(ProofRejected):
        check(result)


@pytest.mark.parametrize("field", ["nonce", "code", "storage"])
def test_a_value_cannot_be_hidden_or_invented(field: str) -> None:
    result = copy.deepcopy(answer())
    entry = result["storage"][0] if field == "storage" else result[field]
    entry["value"] = "0x" + encode(7).hex() if entry["value"] is None else None
    with pytest.raises(ProofRejected):
        check(result)


def test_evidence_from_two_heights_does_not_mix() -> None:
    assert check(answer(4)).state_root != check(answer(3)).state_root
    mixed = {**answer(3), "storage": answer(4)["storage"]}  # true proofs, but of block 4's root
    with pytest.raises(ProofRejected, match="leads to root"):
        check(mixed)


def test_certificates_are_checked_against_the_validator_set() -> None:
    node, keys, _ = chain()
    result = answer()
    cert = CommitCertificate.decode(bytes.fromhex(result["certificateRaw"][2:]))
    cases = {
        "too few signers": CommitCertificate(cert.height, cert.view, cert.block_hash, cert.signatures[:2]),
        "one signer twice": CommitCertificate(cert.height, cert.view, cert.block_hash,
                                              (*cert.signatures[:2], cert.signatures[0])),
        "an outsider signs": CommitCertificate(cert.height, cert.view, cert.block_hash, (
            *cert.signatures[:2],
            ValidatorSignature(2, KeyPair.generate(ED25519).sign(b"QENEX/v1/consensus", b"vote")))),
        "another block": certify(keys, node.chain.block(2)),
        "signed in another view": CommitCertificate(cert.height, cert.view + 1, cert.block_hash, cert.signatures),
    }
    for why, bad in cases.items():
        with pytest.raises(ProofRejected, match="commit certificate"):
            check({**result, "certificateRaw": "0x" + bad.encode().hex()})
        assert bad != cert, why
    with pytest.raises(ProofRejected, match="commit certificate"):  # the right answer, the wrong validators
        verify_proof_result(result, chain_id=CHAIN, validators=validators()[::-1], address=chain()[2],
                            storage_keys=SLOTS)
    with pytest.raises(ProofRejected, match="not 'other'"):
        verify_proof_result(result, chain_id="other", validators=validators(), address=chain()[2], storage_keys=SLOTS)


@pytest.mark.parametrize("broken", [
    {}, {"headerRaw": "0xzz"}, {"headerRaw": 5}, {"storage": "none"}, {"storage": []}, {"nonce": {}},
    {"code": {"key": "0x00", "value": None, "proof": "0x"}},
])
def test_malformed_answers_are_refused(broken: dict[str, Any]) -> None:
    result = {**answer(), **broken} if broken else {}
    with pytest.raises(ProofRejected):
        check(result)
