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
from crypto.signatures import scheme_by_tag
from node.config import ConsensusSection, NodeConfig, NodeSection, Observer, P2PSection, Peer, RPCSection
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
    role: str = "validator"
    """``validator`` (in genesis, votes) or ``observer`` (follows the chain, never votes)."""

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
    observers: int = 0, listen_host: str | None = None, port_step: int = 1, data_dir: str | None = None,
) -> Layout:
    """Create a fresh devnet under ``root`` (removing an old one): keys, configs, one genesis.

    Nodes 0..validators-1 are the genesis validators ``node-i``; the ``observers`` after them are
    ``observer-k`` (ports following the validators'), listed in every validator's ``[p2p]
    observers`` and dialing every validator. Each home gets a random passphrase file (devnet
    only). ``peer_endpoint(i, j)`` gives the address node i dials to reach node j (default: ``host``
    and j's P2P port; tests route it through a ``devnet.faults.FaultProxy``, Docker through service
    names); ``listen_host`` is where the nodes listen (default ``host``). Node i's ports are
    ``base + i * port_step`` (0: every node on the base ports, as in containers of their own);
    ``data_dir`` overrides ``[node] data_dir``. Raises ``ValueError`` for
    fewer than one validator or a negative observer count.
    """
    if validators < 1 or observers < 0:
        raise ValueError("a devnet needs at least one validator (and no negative number of observers)")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    chain_id = f"qenex-devnet-{os.urandom(3).hex()}"
    total = validators + observers
    keys = [NodeKeys(KeyPair.generate(), KeyPair.generate()) for _ in range(total)]
    nodes = []
    for i, k in enumerate(keys):
        name, role = (f"node-{i}", "validator") if i < validators else (f"observer-{i - validators}", "observer")
        nodes.append(NodeInfo(name, str(root / name), host, base_rpc_port + i * port_step,
                              base_p2p_port + i * port_step, "0x" + k.node.address.hex(), role))
    observer_entries = tuple(Observer(scheme_by_tag(k.node.scheme_tag).name, k.node.public_key).render()
                             for k in keys[validators:])
    listen = listen_host or host
    for i, (info, k) in enumerate(zip(nodes, keys, strict=True)):
        # validators dial every other node; an observer dials the validators only
        reach = [j for j in range(total) if j != i and (i < validators or j < validators)]
        peers = tuple(
            Peer(keys[j].node.address, *(peer_endpoint(i, j) if peer_endpoint else (host, nodes[j].p2p_port)))
            .render() for j in reach
        )
        config = NodeConfig(
            node=NodeSection(moniker=info.name, **({"data_dir": data_dir} if data_dir else {})),
            rpc=RPCSection(host=listen, port=info.rpc_port),
            p2p=P2PSection(host=listen, port=info.p2p_port, peers=peers,
                           observers=observer_entries if i < validators else ()),
            consensus=consensus or ConsensusSection(),
        )
        init_home(Path(info.home), config, os.urandom(16).hex().encode(), keys=k, scrypt_n=scrypt_n)
    genesis = Genesis(chain_id, int(time.time() * 1000),
                      tuple(validator_entry(n.name, k) for n, k in zip(nodes[:validators], keys, strict=False)))
    for info in nodes:
        save_genesis(Path(info.home) / "genesis.json", genesis)
    layout = Layout(str(root), chain_id, tuple(nodes))
    layout.save()
    return layout
