"""JSON-RPC against a real node over HTTP on 127.0.0.1: methods, errors, and bad input changing nothing."""

from __future__ import annotations

import json

import pytest

from contracts.vm import contract_address
from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.rpc.client import deploy_token_call, sign_transaction, transfer_call
from state.types import Call, Transaction
from tests.conftest import LiveNode

CHAIN = "qenex-test"


def raw(tx: Transaction) -> str:
    return "0x" + tx.encode().hex()


async def result(live: LiveNode, method: str, *params: object) -> object:
    body = (await live.rpc(method, *params)).json()
    assert "error" not in body, body
    return body["result"]


async def error(live: LiveNode, method: str, *params: object) -> dict:
    body = (await live.rpc(method, *params)).json()
    assert "error" in body, body
    return body["error"]


async def setup_token(live: LiveNode) -> tuple[KeyPair, bytes]:
    owner = KeyPair.generate()
    receipt = await result(live, "qnx_sendRawTransactionAndWait",
                           raw(sign_transaction(owner, CHAIN, 0, [deploy_token_call("Test", "TST", 6, owner.address)],
                                                gas_limit=200_000)), 30)
    assert receipt["status"] == "success"
    token = bytes.fromhex(receipt["output"][0][2:])
    assert token == contract_address(owner.address, 0, 0)
    receipt = await result(live, "qnx_sendRawTransactionAndWait",
                           raw(sign_transaction(owner, CHAIN, 1, [Call(token, "mint", (owner.address, 10**12))])), 30)
    assert receipt["status"] == "success"
    return owner, token


async def state_root(live: LiveNode) -> str:
    return (await result(live, "qnx_status"))["stateRoot"]


async def test_wallet_flow(live_node: LiveNode) -> None:
    live = live_node
    assert await result(live, "qnx_chainId") == CHAIN
    owner, token = await setup_token(live)
    alice = KeyPair.generate(ED25519)
    tx = sign_transaction(owner, CHAIN, 2, [transfer_call(token, alice.address, 1234)])
    tx_hash = await result(live, "qnx_sendRawTransaction", raw(tx))
    assert tx_hash == "0x" + tx.hash.hex()
    receipt = await result(live, "qnx_sendRawTransactionAndWait", raw(tx), 30)  # idempotent: same tx, waits
    assert receipt["txHash"] == tx_hash and receipt["status"] == "success"
    ev = receipt["events"][0]
    assert ev["name"] == "Transfer" and ev["topics"] == ["0x" + owner.address.hex(), "0x" + alice.address.hex()]
    assert ev["data"] == ["1234"]
    assert await result(live, "qnx_getTransactionReceipt", tx_hash) == receipt
    got = await result(live, "qnx_getTransaction", tx_hash)
    assert got["from"] == "0x" + owner.address.hex() and got["nonce"] == 2
    assert got["blockHeight"] == receipt["blockHeight"] and got["index"] == receipt["index"]
    assert await result(live, "qnx_getBalance", "0x" + alice.address.hex(), "0x" + token.hex()) == "1234"
    assert await result(live, "qnx_getBalance", "0x" + owner.address.hex(), "0x" + token.hex(), "latest") == str(
        10**12 - 1234)
    assert await result(live, "qnx_getNonce", "0x" + owner.address.hex()) == 3
    info = await result(live, "qnx_getToken", "0x" + token.hex())
    assert info == {"address": "0x" + token.hex(), "name": "Test", "symbol": "TST", "decimals": 6,
                    "totalSupply": str(10**12), "minter": "0x" + owner.address.hex()}
    block = await result(live, "qnx_getBlockByNumber", receipt["blockHeight"], True)
    assert block["hash"] == receipt["blockHash"]
    assert block["transactions"][receipt["index"]]["hash"] == tx_hash
    assert len(block["commitCertificate"]["signatures"]) == 1
    assert await result(live, "qnx_getBlockByHash", receipt["blockHash"], False) == {
        **block, "transactions": [t["hash"] for t in block["transactions"]]}
    assert await result(live, "qnx_getBlockByNumber", 10**6, False) is None
    assert await result(live, "qnx_call", {"to": "0x" + token.hex(), "method": "balanceOf",
                                           "args": ["0x" + alice.address.hex()]}) == "1234"
    gas = await result(live, "qnx_estimateGas", {"from": "0x" + owner.address.hex(), "to": "0x" + token.hex(),
                                                 "method": "transfer", "args": ["0x" + alice.address.hex(), 1]})
    assert isinstance(gas, int) and 10_000 < gas < 100_000
    reverted = await error(live, "qnx_call", {"to": "0x" + token.hex(), "method": "transfer",
                                              "args": ["0x" + alice.address.hex(), 1]})
    assert reverted["code"] == 3 and "read-only" in reverted["data"]["reason"]
    validators = await result(live, "qnx_validators")
    assert len(validators) == 1 and validators[0]["scheme"] == "ML-DSA-44"
    discover = await result(live, "rpc.discover")
    assert {m["name"] for m in discover["methods"]} == set(live.node and
                                                           ["qnx_chainId", "qnx_status", "qnx_validators",
                                                            "qnx_sendRawTransaction", "qnx_sendRawTransactionAndWait",
                                                            "qnx_getTransaction", "qnx_getTransactionReceipt",
                                                            "qnx_getBlockByNumber", "qnx_getBlockByHash",
                                                            "qnx_getNonce", "qnx_getBalance", "qnx_getToken",
                                                            "qnx_call", "qnx_estimateGas", "qnx_getEvidence",
                                                            "qnx_getProof", "qnx_getPool",
                                                            "qnx_subscribe", "qnx_unsubscribe",
                                                            "rpc.discover"])


async def test_reverted_transaction_changes_only_the_nonce(live_node: LiveNode) -> None:
    live = live_node
    owner, token = await setup_token(live)
    bob = KeyPair.generate(ED25519)
    tx = sign_transaction(owner, CHAIN, 2, [transfer_call(token, bob.address, 10**13)])  # more than minted
    receipt = await result(live, "qnx_sendRawTransactionAndWait", raw(tx), 30)
    assert receipt["status"] == "reverted" and "insufficient balance" in receipt["revertReason"]
    assert receipt["events"] == [] and receipt["gasUsed"] > 0
    assert await result(live, "qnx_getBalance", "0x" + owner.address.hex(), "0x" + token.hex()) == str(10**12)
    assert await result(live, "qnx_getNonce", "0x" + owner.address.hex()) == 3


async def test_bad_transactions_get_errors_and_change_nothing(live_node: LiveNode) -> None:
    live = live_node
    owner, token = await setup_token(live)
    bob = KeyPair.generate(ED25519)
    root = await state_root(live)
    height = (await result(live, "qnx_status"))["height"]
    good = sign_transaction(owner, CHAIN, 2, [transfer_call(token, bob.address, 5)])

    # bad signature: flip one byte
    sig = bytearray(good.signature)
    sig[10] ^= 1
    e = await error(live, "qnx_sendRawTransaction", raw(Transaction(good.body, bytes(sig))))
    assert e["code"] == -32000 and "signature" in e["data"]
    # another key's signature over the same body
    other = KeyPair.generate()
    forged = Transaction(good.body, other.sign(b"QENEX/v1/transaction", good.signing_bytes))
    assert (await error(live, "qnx_sendRawTransaction", raw(forged)))["code"] == -32000
    # wrong chain id
    e = await error(live, "qnx_sendRawTransaction",
                    raw(sign_transaction(owner, "other-chain", 2, [transfer_call(token, bob.address, 5)])))
    assert e["code"] == -32000 and e["data"]["reason"] == "wrong chain id"
    # reused nonce (0 was the deploy)
    e = await error(live, "qnx_sendRawTransaction",
                    raw(sign_transaction(owner, CHAIN, 0, [transfer_call(token, bob.address, 5)])))
    assert e["code"] == -32003 and e["data"]["reason"] == "nonce too low"
    # replay of a committed transaction
    first = (await result(live, "qnx_getBlockByNumber", 1, True))["transactions"][0]["raw"]
    e = await error(live, "qnx_sendRawTransaction", first)
    assert e["code"] == -32003
    # nonce far beyond the window
    e = await error(live, "qnx_sendRawTransaction",
                    raw(sign_transaction(owner, CHAIN, 10**6, [transfer_call(token, bob.address, 5)])))
    assert e["code"] == -32003 and e["data"]["reason"] == "nonce too high"
    # gas limit below the intrinsic cost
    e = await error(live, "qnx_sendRawTransaction",
                    raw(sign_transaction(owner, CHAIN, 2, [transfer_call(token, bob.address, 5)], gas_limit=10)))
    assert e["code"] == -32003 and e["data"]["reason"] == "intrinsic gas too low"
    # garbage and truncated encodings, non-hex
    for bad in ("0x00", "0x" + good.encode().hex()[:-2], "0xzz", "deadbeef", 5):
        e = await error(live, "qnx_sendRawTransaction", bad)
        assert e["code"] in (-32000, -32602), (bad, e)
    assert await state_root(live) == root
    assert (await result(live, "qnx_status"))["mempool"] == 0
    assert (await result(live, "qnx_status"))["height"] == height


async def test_protocol_errors(live_node: LiveNode) -> None:
    live = live_node
    root = await state_root(live)
    post = live.http.post
    r = await post(live.url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error",
                                                                 "data": r.json()["error"]["data"]}}
    assert (await error(live, "qnx_noSuchMethod"))["code"] == -32601
    r = await post(live.url, json={"jsonrpc": "1.0", "id": 7, "method": "qnx_chainId"})
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] == 7
    r = await post(live.url, json={"jsonrpc": "2.0", "id": 1, "method": "qnx_getNonce", "params": ["0x12"]})
    assert r.json()["error"]["code"] == -32602
    r = await post(live.url, json={"jsonrpc": "2.0", "id": 1, "method": "qnx_getNonce", "params": []})
    assert r.json()["error"]["code"] == -32602
    # oversize body: refused before it is parsed
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "qnx_sendRawTransaction", "params": ["0x" + "00" * 70_000]})
    r = await post(live.url, content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == -32005
    # batches: empty, mixed, notifications only, too large
    r = await post(live.url, json=[])
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] is None
    r = await post(live.url, json=[
        {"jsonrpc": "2.0", "id": 1, "method": "qnx_chainId"},
        {"jsonrpc": "2.0", "method": "qnx_chainId"},  # notification: no response
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        5,
    ])
    body = r.json()
    assert [x.get("id") for x in body] == [1, 2, None]
    assert body[0]["result"] == CHAIN and body[1]["error"]["code"] == -32601 and body[2]["error"]["code"] == -32600
    r = await post(live.url, json=[{"jsonrpc": "2.0", "method": "qnx_chainId"}])
    assert r.status_code == 204 and r.content == b""
    r = await post(live.url, json=[{"jsonrpc": "2.0", "id": i, "method": "qnx_chainId"} for i in range(11)])
    assert r.json()["error"]["code"] == -32005
    assert (await live.http.get(live.url + "health")).status_code == 200
    ready = await live.http.get(live.url + "ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert await state_root(live) == root


async def test_state_queries_at_past_heights(live_node: LiveNode) -> None:
    live = live_node
    owner, token = await setup_token(live)
    minted_at = (await result(live, "qnx_status"))["height"]
    alice = KeyPair.generate(ED25519)
    receipt = await result(live, "qnx_sendRawTransactionAndWait",
                           raw(sign_transaction(owner, CHAIN, 2, [transfer_call(token, alice.address, 7)])), 30)
    moved_at = receipt["blockHeight"]
    assert moved_at > minted_at
    who, tok = "0x" + owner.address.hex(), "0x" + token.hex()
    assert await result(live, "qnx_getBalance", who, tok, minted_at) == str(10**12)
    assert await result(live, "qnx_getBalance", who, tok, moved_at) == str(10**12 - 7)
    assert await result(live, "qnx_getBalance", who, tok) == str(10**12 - 7)
    assert [await result(live, "qnx_getNonce", who, h) for h in ("earliest", minted_at, moved_at)] == [0, 2, 3]
    balance_of = {"to": tok, "method": "balanceOf", "args": ["0x" + alice.address.hex()]}
    assert [await result(live, "qnx_call", balance_of, h) for h in (minted_at, moved_at)] == ["0", "7"]
    assert (await result(live, "qnx_getToken", tok, minted_at))["totalSupply"] == str(10**12)
    above = await error(live, "qnx_getNonce", who, moved_at + 100)
    assert above["code"] == -32001 and above["data"]["latest"] == moved_at
    assert (await error(live, "qnx_getNonce", who, "yesterday"))["code"] == -32602
    while live.node.chain.state.prune(moved_at, 3):  # what the node's pruning service does, in small steps
        pass
    pruned = await error(live, "qnx_getBalance", who, tok, minted_at)
    assert pruned["code"] == -32001 and pruned["data"] == {"oldest": moved_at, "latest": moved_at}
    assert await result(live, "qnx_getNonce", who, "earliest") == 3


async def test_get_proof_over_http_verifies(live_node: LiveNode) -> None:
    from node.exceptions import ProofRejected
    from node.rpc.client import verify_proof_result
    from state.codec import decode_value

    live = live_node
    owner, token = await setup_token(live)
    validators = [(v.scheme, v.public_key) for v in live.node.validators]
    slots = [b"b" + owner.address, b"b" + b"\x42" * 20, b"supply"]
    answer = await result(live, "qnx_getProof", "0x" + token.hex(), ["0x" + s.hex() for s in slots])
    proven = verify_proof_result(answer, chain_id=CHAIN, validators=validators, address=token, storage_keys=slots)
    assert proven.height == (await result(live, "qnx_status"))["height"]
    assert proven.state_root.hex() == answer["stateRoot"][2:] and proven.code == "token/v1" and proven.nonce == 0
    assert [None if v is None else decode_value(v) for v in proven.storage.values()] == [10**12, None, 10**12]
    # the owner's account: its nonce, no code, and the block asked for
    mine = await result(live, "qnx_getProof", "0x" + owner.address.hex(), [], 1)
    account = verify_proof_result(mine, chain_id=CHAIN, validators=validators, address=owner.address, height=1)
    assert (account.height, account.nonce, account.code) == (1, 1, None)
    with pytest.raises(ProofRejected, match="not 2"):
        verify_proof_result(mine, chain_id=CHAIN, validators=validators, address=owner.address, height=2)
    with pytest.raises(ProofRejected, match="another state key"):  # an answer about someone else
        verify_proof_result(mine, chain_id=CHAIN, validators=validators, address=token)
    assert (await error(live, "qnx_getProof", "0x" + token.hex(), [], 0))["code"] == -32001
    assert (await error(live, "qnx_getProof", "0x" + token.hex(), "0x00"))["code"] == -32602
    assert (await error(live, "qnx_getProof", "0x" + token.hex(), ["0x00"] * 257))["code"] == -32005


async def test_equivocation_is_recorded_and_served(live_node: LiveNode) -> None:
    from consensus.messages import PREPARE, Vote, vote_signing_bytes
    from crypto.hashing import sha3
    from crypto.signatures import Context
    from node import messages as M

    node = live_node.node
    assert await result(live_node, "qnx_getEvidence") == []
    seq, key = node.replica.next_seq, node.validator_key
    votes = []
    for salt in (b"a", b"b"):
        h = sha3(salt)
        sig = key.sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, PREPARE, 0, seq, h, 0))
        votes.append(Vote(PREPARE, 0, seq, h, 0, sig))
    for v in votes:
        node.on_message(b"peer", M.pack(M.VOTE, v))
    evidence = await result(live_node, "qnx_getEvidence")
    assert len(evidence) == 1
    e = evidence[0]
    assert e["validator"] == 0 and e["kind"] == "prepare" and e["height"] == seq
    assert {e["first"]["blockHash"], e["second"]["blockHash"]} == {"0x" + sha3(b"a").hex(), "0x" + sha3(b"b").hex()}
    metrics = await metric_values(live_node)
    assert metrics["qenex_equivocation_evidence"] == 1.0
    assert metrics['qenex_equivocations_detected_total{kind="prepare"}'] == 1.0
    assert metrics['qenex_p2p_messages_received_total{type="vote"}'] == 2.0


async def metric_values(live: LiveNode) -> dict[str, float]:
    """GET /metrics, parsed from the Prometheus text format into {series: value}."""
    response = await live.http.get(live.url.rstrip("/") + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


async def test_metrics_follow_commits_and_rejections(live_node: LiveNode) -> None:
    before = await metric_values(live_node)
    assert before["qenex_validators"] == 1.0 and before["qenex_view"] == 0.0
    assert before["process_resident_memory_bytes"] > 0
    owner, token = await setup_token(live_node)
    bad = sign_transaction(owner, "another-chain", 2, [transfer_call(token, owner.address, 1)])
    assert (await error(live_node, "qnx_sendRawTransaction", raw(bad)))["code"] == -32000
    stale = sign_transaction(owner, CHAIN, 0, [transfer_call(token, owner.address, 1)])
    await error(live_node, "qnx_sendRawTransaction", raw(stale))
    after = await metric_values(live_node)
    height = live_node.node.chain.head.height
    assert after["qenex_height"] == height >= 2
    assert after["qenex_blocks_committed_total"] - before.get("qenex_blocks_committed_total", 0.0) >= 2
    assert after["qenex_transactions_committed_total"] == 2.0
    assert after["qenex_commit_latency_seconds_count"] == after["qenex_blocks_committed_total"]
    assert after['qenex_transactions_rejected_total{reason="wrong chain id"}'] == 1.0
    assert after['qenex_transactions_rejected_total{reason="nonce too low"}'] == 1.0
    assert after["qenex_mempool_transactions"] == 0.0


async def test_a_waiting_client_hears_that_its_transaction_was_replaced(
    live_node: LiveNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio

    node = live_node.node
    waiting = trio.Event()  # set once the server waits on the held transaction (no polling)
    original = node.waiter
    watched: set[bytes] = set()

    def waiter(tx_hash: bytes) -> trio.Event:
        event = original(tx_hash)
        if tx_hash in watched:
            waiting.set()
        return event

    monkeypatch.setattr(node, "waiter", waiter)
    owner, token = await setup_token(live_node)
    held = sign_transaction(owner, CHAIN, 5, [transfer_call(token, owner.address, 1)])  # nonce 2 is next: held back
    other = sign_transaction(owner, CHAIN, 5, [transfer_call(token, owner.address, 2)])
    watched.add(held.hash)
    answers: list[dict] = []

    async def wait_for_held() -> None:
        answers.append(await error(live_node, "qnx_sendRawTransactionAndWait", raw(held), 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_held)
        with trio.fail_after(10):
            await waiting.wait()
        assert held.hash in node.mempool
        assert await result(live_node, "qnx_sendRawTransaction", raw(other)) == "0x" + other.hash.hex()
    assert answers[0]["code"] == -32003 and "replaced" in answers[0]["data"]["reason"]
    assert held.hash not in live_node.node.mempool and other.hash in live_node.node.mempool
    metrics = await metric_values(live_node)
    assert metrics['qenex_mempool_dropped_total{reason="replaced"}'] == 1.0
