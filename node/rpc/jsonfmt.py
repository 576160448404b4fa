"""JSON forms of chain values (shared/RPC.md "Value formats").

Bytes, hashes and addresses are ``0x``-prefixed lowercase hex; contract values' integers are
decimal strings (they may exceed 2**53); heights, nonces, indexes and gas are JSON integers.
"""

from __future__ import annotations

from typing import Any

from crypto.signatures import scheme_by_tag
from node.rpc.errors import INVALID_PARAMS, RPCError
from state.codec import Value
from state.types import Block, BlockHeader, CommitCertificate, Event, Receipt, Transaction


def hexb(b: bytes) -> str:
    """``0x`` + lowercase hex."""
    return "0x" + b.hex()


def parse_hex(value: Any, name: str, length: int | None = None) -> bytes:
    """Parse a ``0x`` hex param (of ``length`` bytes if given). Raises ``RPCError`` -32602."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RPCError(INVALID_PARAMS, f"{name} must be a 0x-prefixed hex string")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise RPCError(INVALID_PARAMS, f"{name} is not valid hex") from None
    if length is not None and len(raw) != length:
        raise RPCError(INVALID_PARAMS, f"{name} must be {length} bytes, got {len(raw)}")
    return raw


def value_to_json(v: Value) -> Any:
    """A contract value as JSON: ints as decimal strings, bytes as hex, arrays as lists."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return hexb(v)
    if isinstance(v, tuple | list):
        return [value_to_json(x) for x in v]
    raise TypeError(type(v))


def value_from_json(v: Any) -> Value:
    """A contract argument from JSON: ``0x…`` -> bytes, other strings stay strings, numbers -> int.

    Integers are JSON numbers (any size: the server parses them exactly) or ``{"int": "<decimal>"}``
    for clients whose JSON numbers are doubles; a plain string is always a string.
    """
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if v.startswith("0x"):
            return parse_hex(v, "argument")
        return v
    if isinstance(v, list):
        return tuple(value_from_json(x) for x in v)
    if isinstance(v, dict) and set(v) == {"int"} and isinstance(v["int"], str):
        try:
            return int(v["int"], 10)
        except ValueError:
            raise RPCError(INVALID_PARAMS, f"bad integer {v['int']!r}") from None
    raise RPCError(INVALID_PARAMS, f"unsupported argument {v!r} (floats and objects are not values)")


def header_json(h: BlockHeader) -> dict[str, Any]:
    """JSON of a block header."""
    return {
        "chainId": h.chain_id, "height": h.height, "view": h.view, "hash": hexb(h.hash),
        "prevHash": hexb(h.prev_hash), "timestamp": h.timestamp_ms, "proposer": h.proposer,
        "txRoot": hexb(h.tx_root), "stateRoot": hexb(h.state_root), "receiptsRoot": hexb(h.receipts_root),
        "gasUsed": h.gas_used,
    }


def certificate_json(c: CommitCertificate | None) -> dict[str, Any] | None:
    """JSON of a commit certificate."""
    if c is None:
        return None
    return {
        "height": c.height, "view": c.view, "blockHash": hexb(c.block_hash),
        "signatures": [{"validator": s.validator, "signature": hexb(s.signature)} for s in c.signatures],
    }


def tx_json(tx: Transaction, position: tuple[int, bytes, int] | None = None) -> dict[str, Any]:
    """JSON of a transaction, with ``blockHeight``, ``blockHash``, ``index`` when committed."""
    b = tx.body
    out: dict[str, Any] = {
        "hash": hexb(tx.hash), "chainId": b.chain_id, "from": hexb(b.sender), "nonce": b.nonce,
        "gasLimit": b.gas_limit,
        "calls": [{"to": hexb(c.to), "method": c.method, "args": value_to_json(c.args)} for c in b.calls],
        "scheme": scheme_by_tag(b.scheme).name, "publicKey": hexb(b.public_key), "signature": hexb(tx.signature),
        "raw": hexb(tx.encode()),
    }
    if position is not None:
        out["blockHeight"], out["blockHash"], out["index"] = position[0], hexb(position[1]), position[2]
    else:
        out["blockHeight"] = out["blockHash"] = out["index"] = None
    return out


def event_json(e: Event) -> dict[str, Any]:
    """JSON of an event."""
    return {"contract": hexb(e.contract), "name": e.name, "topics": value_to_json(e.topics),
            "data": value_to_json(e.data)}


def receipt_json(r: Receipt, height: int, block_hash: bytes, index: int) -> dict[str, Any]:
    """JSON of a receipt (shared/RPC.md ``qnx_getTransactionReceipt``)."""
    return {
        "txHash": hexb(r.tx_hash), "blockHeight": height, "blockHash": hexb(block_hash), "index": index,
        "status": "success" if r.status == 1 else "reverted", "gasUsed": r.gas_used,
        "events": [event_json(e) for e in r.events], "output": value_to_json(r.output),
        "revertReason": r.revert_reason or None,
    }


def block_json(block: Block, cert: CommitCertificate | None, full: bool) -> dict[str, Any]:
    """JSON of a block (transactions as hashes, or in full)."""
    txs = [
        tx_json(tx, (block.height, block.hash, i)) if full else hexb(tx.hash)
        for i, tx in enumerate(block.transactions)
    ]
    return {"hash": hexb(block.hash), "header": header_json(block.header), "transactions": txs,
            "commitCertificate": certificate_json(cert)}
