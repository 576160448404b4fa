"""Observer nodes with real processes: a non-validator follows the chain by catch-up, serves JSON-RPC,
and never sends a consensus message (no PRE-PREPARE, PREPARE, COMMIT, VIEW-CHANGE, NEW-VIEW or
CHECKPOINT), read from every node's ``GET /metrics``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
import trio

from crypto.keys import KeyPair
from devnet.layout import NodeInfo, generate
from devnet.processes import Running, start_node, stop_node
from devnet.workload import Wallets, submit_all
from node.config import ConsensusSection, load_config
from node.genesis import load_genesis, save_genesis
from node.rpc.client import deploy_token_call, sign_transaction
from state.types import Param
from tests.conftest import STARTING, poll_until
from tests.test_devnet import free_block

pytestmark = pytest.mark.slow

CONSENSUS_TYPES = ("pre_prepare", "pre_prepare_compact", "vote", "view_change", "new_view", "checkpoint")
"""``type`` label values (node/metrics.py MESSAGE_TYPES) of the consensus messages; ``vote`` is PREPARE and COMMIT."""


async def sent_by_type(http: httpx.AsyncClient, node: NodeInfo) -> dict[str, float]:
    """``qenex_p2p_messages_sent_total`` of ``node`` by ``type``, and its ``qenex_catchup_blocks_total``
    under the key ``"catch-up"``, from its ``GET /metrics``."""
    response = await http.get(node.rpc_url.rstrip("/") + "/metrics")
    assert response.status_code == 200
    out = {}
    for line in response.text.splitlines():
        if line.startswith('qenex_p2p_messages_sent_total{type="'):
            series, value = line.rsplit(" ", 1)
            out[series.split('"')[1]] = float(value)
        elif line.startswith("qenex_catchup_blocks_total "):
            out["catch-up"] = float(line.rsplit(" ", 1)[1])
    return out


async def test_an_observer_follows_the_chain_and_never_votes(tmp_path: Path) -> None:
    base = free_block(10)
    layout = generate(tmp_path / "net", validators=4, observers=1, base_rpc_port=base, base_p2p_port=base + 5,
                      scrypt_n=2**10, consensus=ConsensusSection(status_interval_ms=300, retransmit_ms=500))
    validators = [n for n in layout.nodes if n.role == "validator"]
    (observer,) = [n for n in layout.nodes if n.role == "observer"]
    assert len(validators) == 4 and observer.name == "observer-0"
    cfg = load_config(Path(validators[0].home) / "config.toml")
    assert [o.node_id.hex() for o in cfg.observers()] == [observer.node_id[2:]]
    # a checkpoint every 2 blocks, so that the validators send CHECKPOINTs within the test
    genesis = load_genesis(Path(validators[0].home) / "genesis.json")
    genesis = dataclasses.replace(genesis, params=(*genesis.params, Param("checkpointInterval", 2)))
    for node in layout.nodes:
        save_genesis(Path(node.home) / "genesis.json", genesis)
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in validators])
    watch = Wallets([observer.rpc_url])
    try:
        for node in validators:
            running.append(await start_node(node))

        async def height(client_index: int, wallet: Wallets) -> int:
            return int((await wallet.clients[client_index].call("qnx_status"))["height"])

        async def validators_ahead() -> bool:  # empty blocks every second
            return await height(0, wallets) >= 4

        await poll_until(validators_ahead, what="the validators commit 4 blocks without the observer",
                         timeout=90, tolerate=STARTING)
        target = max([await height(i, wallets) for i in range(4)])
        running.append(await start_node(observer))
        owner = KeyPair.generate()
        deploy = sign_transaction(owner, layout.chain_id, 0, [deploy_token_call("O", "O", 0, owner.address)], 200_000)

        async def connected() -> bool:
            return bool((await watch.clients[0].call("qnx_status"))["peers"] == 4)

        await poll_until(connected, what="the observer connects to the 4 validators", timeout=90, tolerate=STARTING)

        async def caught_up() -> bool:
            return await height(0, watch) >= target

        await poll_until(caught_up, what=f"the started-late observer reaches the validators' height {target}")
        result = await submit_all(wallets, [deploy])
        assert not result.failures, result.failures
        receipts: list[dict] = []

        async def observed() -> bool:
            receipts.append(await watch.clients[0].call("qnx_getTransactionReceipt", "0x" + deploy.hash.hex()))
            return receipts[-1] is not None

        await poll_until(observed, what="the observer has the deploy's receipt")
        receipt = receipts[-1]
        assert receipt["status"] == "success"
        status = await watch.clients[0].call("qnx_status")
        assert status["validatorIndex"] is None and status["validators"] == 4
        height_of_deploy = receipt["blockHeight"]
        ours = await watch.clients[0].call("qnx_getBlockByNumber", height_of_deploy, False)
        blocks: list[dict] = []

        async def validator_has_it() -> bool:  # each validator commits on its own 2f+1 commits
            blocks.append(await wallets.clients[1].call("qnx_getBlockByNumber", height_of_deploy, False))
            return blocks[-1] is not None

        await poll_until(validator_has_it, what=f"validator 1 commits block {height_of_deploy}")
        theirs = blocks[-1]
        assert ours["hash"] == theirs["hash"] and ours["header"]["stateRoot"] == theirs["header"]["stateRoot"]
        # a transaction sent to the observer reaches the validators by gossip and commits
        second = sign_transaction(owner, layout.chain_id, 1, [deploy_token_call("P", "P", 0, owner.address)], 200_000)
        result = await submit_all(watch, [second])
        assert not result.failures, result.failures
        async with httpx.AsyncClient(timeout=30) as http:
            ours_sent = await sent_by_type(http, observer)
            theirs_sent = [await sent_by_type(http, v) for v in validators]
        # it followed by catch-up (it started 4+ blocks behind) and never sent a consensus message
        assert ours_sent["catch-up"] > 0
        assert {t: ours_sent[t] for t in CONSENSUS_TYPES} == dict.fromkeys(CONSENSUS_TYPES, 0.0)
        assert ours_sent["get_blocks"] > 0 and ours_sent["txs"] > 0
        # ...while the validators did (the same series, so the check can fail): the primaries of the
        # views proposed, every validator voted and signed checkpoints
        assert sum(sent["pre_prepare_compact"] for sent in theirs_sent) > 0  # proposals go compact by default
        assert all(sent["vote"] > 0 and sent["checkpoint"] > 0 for sent in theirs_sent), theirs_sent
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            await watch.aclose()
            for r in running:
                await stop_node(r)
