"""genesis.json and observer entries: node identity keys must be post-quantum (issue 7, P2P security)."""

from __future__ import annotations

import pytest

from crypto.keys import KeyPair
from crypto.signatures import ED25519, ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S, SignatureScheme
from node.config import Observer
from node.exceptions import ConfigError
from node.genesis import genesis_from_json, genesis_to_json
from node.setup import NodeKeys, validator_entry
from state.types import Genesis


def genesis_with_node_scheme(scheme: SignatureScheme) -> Genesis:
    keys = [NodeKeys(KeyPair.generate(ED25519), KeyPair.generate(scheme if i == 2 else ML_DSA_44)) for i in range(4)]
    return Genesis("qenex-test", 1_700_000_000_000, tuple(validator_entry(f"v{i}", k) for i, k in enumerate(keys)))


@pytest.mark.parametrize("scheme", [ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S], ids=lambda s: s.name)
def test_post_quantum_node_keys_round_trip(scheme: SignatureScheme) -> None:
    genesis = genesis_with_node_scheme(scheme)
    assert genesis_from_json(genesis_to_json(genesis)) == genesis
    key = KeyPair.generate(scheme)
    entry = Observer(scheme.name, key.public_key).render()
    assert Observer.parse(entry).node_id == key.address


def test_a_classical_node_key_is_refused_naming_the_validator() -> None:
    doc = genesis_to_json(genesis_with_node_scheme(ED25519))
    with pytest.raises(ConfigError, match=r"validators\[2\]\.nodeScheme Ed25519 is not post-quantum"):
        genesis_from_json(doc)
    with pytest.raises(ConfigError, match="Ed25519 is not post-quantum"):
        Observer.parse(Observer("Ed25519", KeyPair.generate(ED25519).public_key).render())
