"""Observer nodes with real processes: a non-validator follows the chain, serves JSON-RPC, never votes."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from crypto.keys import KeyPair
from devnet.layout import generate
from devnet.processes import Running, start_node, stop_node
from devnet.workload import Wallets, submit_all
from node.config import ConsensusSection, load_config
from node.rpc.client import deploy_token_call, sign_transaction
from tests.conftest import STARTING, poll_until
from tests.test_devnet import free_block

pytestmark = pytest.mark.slow


async def test_an_observer_follows_the_chain_and_never_votes(tmp_path: Path) -> None:
    base = free_block(10)
    layout = generate(tmp_path / "net", validators=4, observers=1, base_rpc_port=base, base_p2p_port=base + 5,
                      scrypt_n=2**10, consensus=ConsensusSection(status_interval_ms=300, retransmit_ms=500))
    validators = [n for n in layout.nodes if n.role == "validator"]
    (observer,) = [n for n in layout.nodes if n.role == "observer"]
    assert len(validators) == 4 and observer.name == "observer-0"
    cfg = load_config(Path(validators[0].home) / "config.toml")
    assert [o.node_id.hex() for o in cfg.observers()] == [observer.node_id[2:]]
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in validators])
    watch = Wallets([observer.rpc_url])
    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        owner = KeyPair.generate()
        deploy = sign_transaction(owner, layout.chain_id, 0, [deploy_token_call("O", "O", 0, owner.address)], 200_000)
        async def connected() -> bool:
            return bool((await watch.clients[0].call("qnx_status"))["peers"] == 4)

        await poll_until(connected, what="the observer connects to the 4 validators", timeout=90, tolerate=STARTING)
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
        height = receipt["blockHeight"]
        ours = await watch.clients[0].call("qnx_getBlockByNumber", height, False)
        blocks: list[dict] = []

        async def validator_has_it() -> bool:  # each validator commits on its own 2f+1 commits
            blocks.append(await wallets.clients[1].call("qnx_getBlockByNumber", height, False))
            return blocks[-1] is not None

        await poll_until(validator_has_it, what=f"validator 1 commits block {height}")
        theirs = blocks[-1]
        assert ours["hash"] == theirs["hash"] and ours["header"]["stateRoot"] == theirs["header"]["stateRoot"]
        # a transaction sent to the observer reaches the validators by gossip and commits
        second = sign_transaction(owner, layout.chain_id, 1, [deploy_token_call("P", "P", 0, owner.address)], 200_000)
        result = await submit_all(watch, [second])
        assert not result.failures, result.failures
        # commit certificates never name the observer: 4 validators, indexes 0..3
        cert = (await wallets.clients[0].call("qnx_getBlockByNumber", height, False))["commitCertificate"]
        assert {s["validator"] for s in cert["signatures"]} <= {0, 1, 2, 3}
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            await watch.aclose()
            for r in running:
                await stop_node(r)
