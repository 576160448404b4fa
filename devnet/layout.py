"""The devnet's files: one home per validator under ``.devnet/`` plus ``devnet.json``.

Validator i (genesis order, i = 0..n-1) is ``node-i`` with RPC on ``base_rpc_port + i`` and P2P on
``base_p2p_port + i``, all on one host (127.0.0.1 by default). ``devnet.json`` records the chain
id and the nodes so that ``qenex-devnet up`` can restart the same chain.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from crypto.keys import KeyPair
from node.config import ConsensusSection, NodeConfig, NodeSection, P2PSection, Peer, RPCSection
from node.genesis import save_genesis
from node.setup import NodeKeys, init_home, validator_entry
from state.types import Genesis

DEFAULT_ROOT = Path(".devnet")
BASE_RPC_PORT = 8545
BASE_P2P_PORT = 26656


@dataclass(frozen=True)
class NodeInfo:
    """One devnet node: name, home directory, RPC and P2P ports, node id (hex)."""

    name: str
    home: str
    host: str
    rpc_port: int
    p2p_port: int
    node_id: str

    @property
    def rpc_url(self) -> str:
        """``http://host:rpc_port``."""
        return f"http://{self.host}:{self.rpc_port}"

    @property
    def log_path(self) -> Path:
        """Where the node's output goes: ``<home>/node.log``."""
        return Path(self.home) / "node.log"


@dataclass(frozen=True)
class Layout:
    """A generated devnet: chain id and its nodes."""

    root: str
    chain_id: str
    nodes: tuple[NodeInfo, ...]

    def save(self) -> None:
        """Write ``devnet.json`` under the root."""
        doc = {"chainId": self.chain_id, "nodes": [asdict(n) for n in self.nodes]}
        (Path(self.root) / "devnet.json").write_text(json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Layout | None:
        """Read ``devnet.json`` under ``root``; None if there is no devnet there."""
        path = root / "devnet.json"
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        return cls(str(root), doc["chainId"], tuple(NodeInfo(**n) for n in doc["nodes"]))


def generate(
    root: Path = DEFAULT_ROOT, *, validators: int = 4, host: str = "127.0.0.1",
    base_rpc_port: int = BASE_RPC_PORT, base_p2p_port: int = BASE_P2P_PORT, scrypt_n: int = 1 << 14,
    consensus: ConsensusSection | None = None,
    peer_endpoint: Callable[[int, int], tuple[str, int]] | None = None,
) -> Layout:
    """Create a fresh devnet under ``root`` (removing an old one): keys, configs, one genesis.

    Each home gets a random passphrase file (devnet only). ``peer_endpoint(i, j)`` gives the
    address validator i dials to reach j (default: j's P2P port; tests route it through a
    ``devnet.faults.FaultProxy``). Raises ``ValueError`` for fewer than one validator.
    """
    if validators < 1:
        raise ValueError("a devnet needs at least one validator")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    chain_id = f"qenex-devnet-{os.urandom(3).hex()}"
    keys = [NodeKeys(KeyPair.generate(), KeyPair.generate()) for _ in range(validators)]
    nodes = []
    for i, k in enumerate(keys):
        nodes.append(NodeInfo(f"node-{i}", str(root / f"node-{i}"), host, base_rpc_port + i, base_p2p_port + i,
                              "0x" + k.node.address.hex()))
    for i, (info, k) in enumerate(zip(nodes, keys, strict=True)):
        peers = tuple(
            Peer(keys[j].node.address, *(peer_endpoint(i, j) if peer_endpoint else (host, nodes[j].p2p_port)))
            .render() for j in range(validators) if j != i
        )
        config = NodeConfig(
            node=NodeSection(moniker=info.name),
            rpc=RPCSection(host=host, port=info.rpc_port),
            p2p=P2PSection(host=host, port=info.p2p_port, peers=peers),
            consensus=consensus or ConsensusSection(),
        )
        init_home(Path(info.home), config, os.urandom(16).hex().encode(), keys=k, scrypt_n=scrypt_n)
    genesis = Genesis(chain_id, int(time.time() * 1000),
                      tuple(validator_entry(n.name, k) for n, k in zip(nodes, keys, strict=True)))
    for info in nodes:
        save_genesis(Path(info.home) / "genesis.json", genesis)
    layout = Layout(str(root), chain_id, tuple(nodes))
    layout.save()
    return layout
