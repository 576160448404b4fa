"""The OpenRPC 1.2.6 description of the JSON-RPC API (``rpc.discover``, shared/RPC.md).

``SPECS`` holds, for every method the server can serve, its summary, its params (name, JSON Schema,
required) in positional order and its result; ``document`` assembles the OpenRPC document of the
methods a server actually serves (the admin methods only where ``[rpc] admin_enabled``). Shared
shapes (``Hash``, ``Address``, ``Receipt`` …) are JSON Schemas under ``components.schemas``, referred
to by ``$ref``. Every method accepts params by position or by name (``paramStructure: "either"``).
Spec followed: https://spec.open-rpc.org/ (1.2.6), schemas in JSON Schema draft 7.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

OPENRPC_VERSION: Final = "1.2.6"
API_VERSION: Final = "1.0.0"


def ref(name: str) -> dict[str, str]:
    """``{"$ref": "#/components/schemas/<name>"}``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or JSON ``null``."""
    return {"oneOf": [schema, {"type": "null"}]}


def _obj(required: Iterable[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
ANY: dict[str, Any] = {}

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Hex": {"type": "string", "pattern": "^0x([0-9a-f]{2})*$", "description": "bytes as 0x-prefixed lowercase hex"},
    "Hash": {"type": "string", "pattern": "^0x[0-9a-f]{64}$", "description": "a 32-byte SHA3-256 hash"},
    "Address": {"type": "string", "pattern": "^0x[0-9a-f]{40}$", "description": "a 20-byte address"},
    "Amount": {"type": "string", "pattern": "^[0-9]+$", "description": "an integer in base units, decimal"},
    "BlockSelector": {"oneOf": [INT, {"type": "string", "enum": ["latest", "earliest"]}],
                      "description": "a height, or the newest (latest) or first (earliest) committed block"},
    "Value": {"description": "a contract value: 0x-hex bytes, decimal-string integers, strings, booleans, "
                             "null, arrays of values (as arguments, integers may also be JSON numbers or "
                             "{\"int\": \"<decimal>\"})"},
    "Header": _obj(["chainId", "height", "hash", "prevHash", "stateRoot"],
                   chainId=STR, height=INT, view=INT, hash=ref("Hash"), prevHash=ref("Hash"),
                   timestamp={"type": "integer", "description": "milliseconds since the Unix epoch"},
                   proposer=INT, txRoot=ref("Hash"), stateRoot=ref("Hash"), receiptsRoot=ref("Hash"), gasUsed=INT),
    "CommitCertificate": nullable(_obj(["height", "view", "blockHash", "signatures"],
                                       height=INT, view=INT, blockHash=ref("Hash"),
                                       signatures={"type": "array", "items": _obj(
                                           ["validator", "signature"], validator=INT, signature=ref("Hex"))})),
    "Transaction": _obj(["hash", "from", "nonce", "calls"],
                        hash=ref("Hash"), chainId=STR, **{"from": ref("Address")}, nonce=INT, gasLimit=INT,
                        calls={"type": "array", "items": _obj(["to", "method", "args"], to=ref("Address"),
                                                              method=STR, args={"type": "array"})},
                        scheme=STR, publicKey=ref("Hex"), signature=ref("Hex"), raw=ref("Hex"),
                        blockHeight=nullable(INT), blockHash=nullable(ref("Hash")), index=nullable(INT)),
    "Event": _obj(["contract", "name", "topics", "data"], contract=ref("Address"), name=STR,
                  topics={"type": "array", "items": ref("Value")}, data={"type": "array", "items": ref("Value")}),
    "Receipt": _obj(["txHash", "blockHeight", "blockHash", "index", "status", "gasUsed", "events"],
                    txHash=ref("Hash"), blockHeight=INT, blockHash=ref("Hash"), index=INT,
                    status={"enum": ["success", "reverted"]}, gasUsed=INT,
                    events={"type": "array", "items": ref("Event")}, output={"type": "array"},
                    revertReason=nullable(STR)),
    "Block": _obj(["hash", "header", "transactions", "commitCertificate"], hash=ref("Hash"), header=ref("Header"),
                  transactions={"type": "array", "items": {"oneOf": [ref("Hash"), ref("Transaction")]}},
                  commitCertificate=ref("CommitCertificate")),
    "CallRequest": _obj(["to", "method"], **{"from": ref("Address")}, to=ref("Address"), method=STR,
                        args={"type": "array", "items": ref("Value")}),
    "ProofEntry": _obj(["key", "value", "proof"], key=ref("Hex"), value=nullable(ref("Hex")), proof=ref("Hex")),
    "EventFilter": {"type": "object", "properties": {
        "contract": ref("Address"), "name": STR,
        "indexed": {"oneOf": [{"type": "array"}, {"type": "object"}],
                    "description": "topic constraints by position (list; null = any, a list = any of) or an object "
                                   "of positions or, for built-in events, topic names (Transfer: from, to ...)"}},
        "additionalProperties": False},
    "SubscriptionId": {"type": "string", "pattern": "^0x[0-9a-f]+$"},
}
"""Shared JSON Schemas (``components.schemas``)."""


@dataclass(frozen=True)
class Param:
    """One param: its name (for by-name calls), JSON Schema, and whether it must be given."""

    name: str
    schema: dict[str, Any]
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """What ``rpc.discover`` says of one method."""

    summary: str
    params: tuple[Param, ...]
    result: dict[str, Any]
    description: str = ""
    result_name: str = "result"


BLOCK = Param("block", ref("BlockSelector"), False, "default: latest")

SPECS: Final[dict[str, MethodSpec]] = {
    "qnx_chainId": MethodSpec("The chain id.", (), STR),
    "qnx_status": MethodSpec("Height, head, view, validators, peers and sync state of the node.", (), _obj(
        ["chainId", "nodeId", "height", "blockHash", "stateRoot", "view", "validators", "peers", "syncing"],
        chainId=STR, nodeId=ref("Address"), moniker=STR, height=INT, blockHash=ref("Hash"), stateRoot=ref("Hash"),
        timestamp=INT, view=INT, validators=INT, validatorIndex=nullable(INT), peers=INT, syncing=BOOL,
        mempool=INT, oldestStateHeight=INT, stableCheckpoint=nullable({"type": "object"}))),
    "qnx_validators": MethodSpec("The validator set.", (BLOCK,), {"type": "array", "items": _obj(
        ["address", "publicKey", "scheme"], index=INT, name=STR, address=ref("Address"), publicKey=ref("Hex"),
        scheme=STR, nodeId=ref("Address"))}),
    "qnx_sendRawTransaction": MethodSpec(
        "Admit a signed transaction to the mempool; its hash.",
        (Param("tx", ref("Hex"), description="the canonical encoding of the signed transaction"),), ref("Hash"),
        "Checks decoding, size, signature, chain id, gas and nonce (-32000 invalid input, -32003 rejected)."),
    "qnx_sendRawTransactionAndWait": MethodSpec(
        "Admit a signed transaction and return its receipt once its block is committed.",
        (Param("tx", ref("Hex")), Param("timeoutSeconds", {"type": "number", "exclusiveMinimum": 0}, False,
                                        "default 30, at most [rpc] max_wait_seconds")), ref("Receipt"),
        "-32003 with the reason if the transaction leaves the mempool uncommitted; -32005 on timeout."),
    "qnx_getTransaction": MethodSpec("A committed (with its position) or pending transaction, or null.",
                                     (Param("txHash", ref("Hash")),), nullable(ref("Transaction"))),
    "qnx_getTransactionReceipt": MethodSpec("The receipt of a committed transaction, or null.",
                                            (Param("txHash", ref("Hash")),), nullable(ref("Receipt"))),
    "qnx_getBlockByNumber": MethodSpec("A block with its commit certificate, or null.",
                                       (Param("block", ref("BlockSelector")),
                                        Param("fullTransactions", BOOL, False, "default false: hashes only")),
                                       nullable(ref("Block"))),
    "qnx_getBlockByHash": MethodSpec("A block with its commit certificate, or null.",
                                     (Param("blockHash", ref("Hash")), Param("fullTransactions", BOOL, False)),
                                     nullable(ref("Block"))),
    "qnx_getNonce": MethodSpec("The next nonce the account must use.", (Param("address", ref("Address")), BLOCK),
                               INT),
    "qnx_getBalance": MethodSpec("A token balance in base units.",
                                 (Param("address", ref("Address")), Param("token", ref("Address")), BLOCK),
                                 ref("Amount")),
    "qnx_getToken": MethodSpec("A token's metadata and supply; of an AMM pool, its LP token (minter null). "
                               "-32001 when there is no token.",
                               (Param("token", ref("Address")), BLOCK), _obj(
                                   ["address", "name", "symbol", "decimals", "totalSupply", "minter"],
                                   address=ref("Address"), name=STR, symbol=STR, decimals=INT,
                                   totalSupply=ref("Amount"), minter=nullable(ref("Address")))),
    "qnx_getPool": MethodSpec("The AMM pool of two tokens (either order), or null.",
                              (Param("tokenA", ref("Address")), Param("tokenB", ref("Address")), BLOCK,
                               Param("factory", ref("Address"), False, "default: the canonical factory")),
                              nullable(_obj(["address", "token0", "token1", "reserve0", "reserve1", "totalSupply"],
                                            address=ref("Address"), token0=ref("Address"), token1=ref("Address"),
                                            reserve0=ref("Amount"), reserve1=ref("Amount"),
                                            totalSupply=ref("Amount"), price0CumulativeLast=ref("Amount"),
                                            price1CumulativeLast=ref("Amount"), blockTimestampLast=INT,
                                            kLast=ref("Amount"), factory=ref("Address")))),
    "qnx_call": MethodSpec("The result of a read-only contract call (error 3 with the reason if it reverts).",
                           (Param("call", ref("CallRequest")), BLOCK), ref("Value")),
    "qnx_estimateGas": MethodSpec("Gas the call would use as a transaction now (error 3 if it reverts).",
                                  (Param("call", ref("CallRequest"), description="from is required"),), INT),
    "qnx_getProof": MethodSpec(
        "An account's nonce, code id and storage slots with Merkle proofs, the header and its certificate.",
        (Param("address", ref("Address")), Param("storageKeys", {"type": "array", "items": ref("Hex"),
                                                                 "maxItems": 256}), BLOCK),
        _obj(["address", "height", "blockHash", "stateRoot", "nonce", "code", "storage", "headerRaw",
              "certificateRaw"], address=ref("Address"), height=INT, blockHash=ref("Hash"), stateRoot=ref("Hash"),
             nonce=ref("ProofEntry"), code=ref("ProofEntry"), storage={"type": "array", "items": ref("ProofEntry")},
             header=ref("Header"), headerRaw=ref("Hex"), commitCertificate=ref("CommitCertificate"),
             certificateRaw=ref("Hex"))),
    "qnx_getEvidence": MethodSpec("Equivocations seen: two signed, conflicting messages of one validator.", (),
                                  {"type": "array", "items": {"type": "object"}}),
    "qnx_subscribe": MethodSpec(
        "Subscribe to newHeads, events or txStatus (WebSocket /ws only); the subscription id.",
        (Param("kind", {"enum": ["newHeads", "events", "txStatus"]}),
         Param("argument", {"oneOf": [ref("EventFilter"), ref("Hash")]}, False,
               "events: the filter; txStatus: the transaction hash; newHeads: none")),
        ref("SubscriptionId"),
        'Pushes arrive as {"jsonrpc": "2.0", "method": "qnx_subscription", "params": {"subscription": id, '
        '"result": ...}}: newHeads a Header; events an Event plus txHash, blockHeight, blockHash, index, '
        'eventIndex; txStatus {"status": "admitted"|"committed"|"dropped", "txHash", "receipt"?, "reason"?}. '
        "Over HTTP: -32601. Beyond [rpc] max_subscriptions_per_connection: -32005."),
    "qnx_unsubscribe": MethodSpec("End a subscription of this connection (WebSocket /ws only).",
                                  (Param("subscriptionId", ref("SubscriptionId")),), BOOL,
                                  "-32001 if this connection has no such subscription."),
    "rpc.discover": MethodSpec("This OpenRPC document.", (), {"type": "object"}),
    "admin_peers": MethodSpec("Connected peers (admin).", (), {"type": "array", "items": _obj(
        ["nodeId", "address", "score"], nodeId=ref("Address"), name=nullable(STR), address=STR,
        direction={"enum": ["inbound", "outbound"]}, score={"type": "number"})}),
    "admin_flushMempool": MethodSpec("Drop every pending transaction (admin); how many were dropped.", (),
                                     _obj(["dropped"], dropped=INT),
                                     "Waiting clients and txStatus subscribers hear the reason."),
    "admin_setLogLevel": MethodSpec(
        "Set a logger's level until the next SIGHUP reload (admin).",
        (Param("module", STR, description='a logger name such as qenex.p2p; "" or "root" for the root logger'),
         Param("level", {"enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]})),
        _obj(["module", "level", "previous"], module=STR, level=STR, previous=STR)),
}
"""Every method the server can serve, by name."""


def method_json(name: str, spec: MethodSpec, doc: str = "") -> dict[str, Any]:
    """The OpenRPC Method Object of ``name``."""
    description = " ".join(x for x in (spec.description, doc) if x)
    out: dict[str, Any] = {
        "name": name, "summary": spec.summary, "paramStructure": "either",
        "params": [{"name": p.name, "required": p.required, "schema": p.schema,
                    **({"description": p.description} if p.description else {})} for p in spec.params],
        "result": {"name": spec.result_name, "schema": spec.result},
    }
    if description:
        out["description"] = description
    return out


def document(methods: Iterable[str]) -> dict[str, Any]:
    """The OpenRPC document of ``methods`` (sorted). Raises ``KeyError`` for a method without a spec."""
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": "QENEX Ledger JSON-RPC", "version": API_VERSION,
                 "description": "JSON-RPC 2.0 over HTTP POST / and WebSocket /ws (shared/RPC.md)."},
        "methods": [method_json(name, SPECS[name]) for name in sorted(methods)],
        "components": {"schemas": SCHEMAS},
    }
