"""genesis.json: the human-readable form of ``state.types.Genesis``.

::

    {"chainId": "qenex-devnet-1a2b3c", "genesisTime": 1763700000000,
     "validators": [{"name": "node-0", "address": "0x…", "scheme": "ML-DSA-44", "publicKey": "0x…",
                     "nodeScheme": "ML-DSA-44", "nodePublicKey": "0x…"}, …],
     "params": {"blockGasLimit": 2000000000}}

``genesisTime`` is in milliseconds since the Unix epoch. The genesis hash (SHA3-256 of the
canonical encoding of the ``Genesis`` struct) is the ``prev_hash`` of block 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crypto.exceptions import CryptoError
from crypto.keys import Address, address_of
from crypto.signatures import scheme_by_name, scheme_by_tag
from node.exceptions import ConfigError
from state.types import Genesis, Param, Validator


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _unhex(s: Any, what: str) -> bytes:
    if not isinstance(s, str) or not s.startswith("0x"):
        raise ConfigError(f"genesis: {what} must be 0x-hex")
    try:
        return bytes.fromhex(s[2:])
    except ValueError as err:
        raise ConfigError(f"genesis: {what} is not hex") from err


def genesis_to_json(g: Genesis) -> dict[str, Any]:
    """The JSON document of ``g``."""
    return {
        "chainId": g.chain_id,
        "genesisTime": g.genesis_time_ms,
        "validators": [
            {
                "name": v.name,
                "address": _hex(v.address),
                "scheme": scheme_by_tag(v.scheme).name,
                "publicKey": _hex(v.public_key),
                "nodeScheme": scheme_by_tag(v.node_scheme).name,
                "nodePublicKey": _hex(v.node_public_key),
            }
            for v in g.validators
        ],
        "params": {p.name: p.value for p in g.params},
    }


def genesis_from_json(doc: Any) -> Genesis:
    """Parse and check a genesis document. Raises ``ConfigError`` naming the bad field."""
    try:
        validators = []
        for i, v in enumerate(doc["validators"]):
            scheme = scheme_by_name(v["scheme"]).tag
            node_scheme_obj = scheme_by_name(v["nodeScheme"])
            if not node_scheme_obj.post_quantum:
                raise ConfigError(f"genesis: validators[{i}].nodeScheme {node_scheme_obj.name} is not post-quantum: "
                                  "node keys authenticate P2P sessions and must be ML-DSA or SLH-DSA")
            node_scheme = node_scheme_obj.tag
            pk = _unhex(v["publicKey"], f"validators[{i}].publicKey")
            address = Address(_unhex(v["address"], f"validators[{i}].address"))
            if address != address_of(scheme, pk):
                raise ConfigError(f"genesis: validators[{i}].address is not the address of its public key")
            validators.append(
                Validator(str(v["name"]), address, scheme, pk, node_scheme,
                          _unhex(v["nodePublicKey"], f"validators[{i}].nodePublicKey"))
            )
        if not validators:
            raise ConfigError("genesis: no validators")
        params = tuple(Param(str(k), int(val)) for k, val in sorted(doc.get("params", {}).items()))
        chain_id = doc["chainId"]
        if not isinstance(chain_id, str) or not 0 < len(chain_id) <= 64:
            raise ConfigError("genesis: chainId must be a string of 1..64 characters")
        return Genesis(chain_id, int(doc["genesisTime"]), tuple(validators), params)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, CryptoError) as err:
        raise ConfigError(f"genesis: malformed ({type(err).__name__}: {err})") from err


def load_genesis(path: Path) -> Genesis:
    """Read genesis.json at ``path``. Raises ``ConfigError``."""
    try:
        return genesis_from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read genesis {path}: {err}") from err


def save_genesis(path: Path, g: Genesis) -> None:
    """Write ``g`` as genesis.json at ``path``."""
    Path(path).write_text(json.dumps(genesis_to_json(g), indent=2) + "\n")
