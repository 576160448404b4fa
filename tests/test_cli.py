"""``qenex-node``: init writes a config.toml documenting every option (meaning, unit, default) that
reads back to the defaults; keygen, show-validator and status; start stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
import tomllib
from pathlib import Path

import httpx
import pytest
import trio

from crypto.keystore import load_keystore
from devnet.layout import generate
from devnet.processes import start_node, stop_node
from node.cli import main
from node.config import (
    MAX_FRAME_BYTES,
    NUMBER_UNITS,
    VALUE_KINDS,
    ConsensusSection,
    NodeConfig,
    NodeSection,
    load_config,
    render_config,
)
from node.exceptions import ConfigError
from node.genesis import load_genesis
from node.node import data_path
from node.rpc.client import AsyncClient
from state.chain import ChainStore
from state.kv import LevelDBStore
from tests.conftest import STARTING, LiveNode, height_at_least, poll_until
from tests.test_devnet import free_block

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QENEX_PASSPHRASE", PASSPHRASE)
    return PASSPHRASE


def documented_options(text: str) -> dict[tuple[str, str], tuple[list[str], str, str]]:
    """(section, option) -> (meaning lines, unit, default text) from the comment block above each
    option of a rendered config.toml; fails the test if an option lacks its ``# unit: ...; default: ...``."""
    out: dict[tuple[str, str], tuple[list[str], str, str]] = {}
    section, comments = "", []
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section, comments = m[1], []
        elif line.startswith("# "):
            comments.append(line[2:])
        elif m := re.match(r"(\w+) = ", line):
            assert comments, f"{section}.{m[1]} has no comment"
            unit_line = re.fullmatch(r"unit: (.+); default: (.+)", comments[-1])
            assert unit_line, f"{section}.{m[1]}: last comment line is not '# unit: ...; default: ...'"
            out[(section, m[1])] = (comments[:-1], unit_line[1], unit_line[2])
            comments = []
    return out


def test_init_writes_every_option_with_meaning_unit_and_default(tmp_path: Path, passphrase: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--moniker", "val-1", "--chain-id", "qenex-cli"]) == 0
    assert "chain qenex-cli" in capsys.readouterr().out
    text = (home / "config.toml").read_text()
    assert load_config(home / "config.toml") == NodeConfig(node=NodeSection(moniker="val-1"))
    documented = documented_options(text)
    defaults = NodeConfig()
    expected = {(s.name, f.name) for s in dataclasses.fields(NodeConfig)
                for f in dataclasses.fields(getattr(defaults, s.name))}
    assert set(documented) == expected  # every field of every section, nothing else
    for (section, option), (meaning, unit, default_text) in documented.items():
        default = getattr(getattr(defaults, section), option)
        assert meaning and all(line.strip() for line in meaning), f"{section}.{option} has no meaning"
        if isinstance(default, int | float) and not isinstance(default, bool):
            assert unit in NUMBER_UNITS, f"{section}.{option}: {unit!r} is not a unit of a number"
        else:
            assert unit in VALUE_KINDS, f"{section}.{option}: {unit!r}"
        parsed = tomllib.loads(f"v = {default_text}")["v"]
        assert parsed == (list(default) if isinstance(default, tuple) else default), (section, option)
    assert documented[("node", "moniker")][2] == '"node"' and '\nmoniker = "val-1"\n' in text
    assert documented[("p2p", "send_queue_bytes")][1] == "bytes"
    assert documented[("consensus", "max_block_txs")][1] == "transactions"


@pytest.mark.parametrize(("section", "bad"), [
    *(("p2p", bad) for bad in [
        "send_queue_messages = 0", "bulk_queue_messages = 0", "bulk_queue_bytes = 0",
        "score_recovery_per_second = -1.0", "reconnect_backoff_initial_seconds = 0.0",
        "reconnect_backoff_max_seconds = 0.01", "ban_threshold = 5.0", "handshake_timeout_seconds = 0.0",
        "inbound_bytes_per_second = 0", "max_pending_handshakes = 0", "max_pending_per_ip = 0",
        f"max_frame_bytes = {MAX_FRAME_BYTES + 1}", "max_frame_bytes = 4294967296", "max_frame_bytes = -1",
    ]),
    *(("consensus", bad) for bad in [
        "block_interval_ms = 0", "empty_block_interval_ms = -1", "max_block_txs = 0", "retransmit_ms = 0",
        "status_interval_ms = 0", "max_clock_drift_ms = 0", "view_timeout_ms = 0", "view_timeout_ms = -5",
    ]),
    *(("mempool", bad) for bad in ["max_txs = 0", "max_bytes = 0", "nonce_window = 0", "ttl_seconds = 0"]),
])
def test_out_of_range_settings_are_refused_at_load(tmp_path: Path, section: str, bad: str) -> None:
    text = render_config(NodeConfig())
    option = bad.split(" = ")[0]
    [line] = [x for x in text.splitlines() if x.startswith(f"{option} = ")]
    path = tmp_path / "config.toml"
    path.write_text(text.replace(f"\n{line}\n", f"\n{bad}\n"))
    with pytest.raises(ConfigError, match=rf"\[{section}\] needs") as err:
        load_config(path)
    assert option in str(err.value)  # the message names what to fix


@pytest.mark.parametrize("good", [
    f"max_frame_bytes = {MAX_FRAME_BYTES}", "max_frame_bytes = 0", "empty_block_interval_ms = 0",
    "max_pending_handshakes = 1", "max_pending_per_ip = 1", "ttl_seconds = 1",
])
def test_settings_at_the_edge_of_their_range_load(tmp_path: Path, good: str) -> None:
    text = render_config(NodeConfig())
    option, value = good.split(" = ")
    [line] = [x for x in text.splitlines() if x.startswith(f"{option} = ")]
    path = tmp_path / "config.toml"
    path.write_text(text.replace(f"\n{line}\n", f"\n{good}\n"))
    cfg = load_config(path)
    assert any(getattr(getattr(cfg, s.name), option, None) == int(value) for s in dataclasses.fields(cfg))


def test_largest_frame_setting_is_one_the_network_takes() -> None:
    """The bound checked at load is the one ``PeerNetwork`` enforces: just above it, the network refuses."""
    import p2p.network
    from crypto.keys import KeyPair
    from crypto.signatures import ED25519

    key = KeyPair.generate(ED25519)
    inbound, _ = trio.open_memory_channel[tuple[bytes, bytes]](1)
    args = {"identity": key, "chain_id": "c", "genesis_hash": bytes(32), "listen_host": "127.0.0.1",
            "listen_port": 0, "peers": {}, "allowed": {key.address: (key.scheme_tag, key.public_key)},
            "inbound": inbound}
    p2p.network.PeerNetwork(**args, max_frame_size=MAX_FRAME_BYTES)
    with pytest.raises(ValueError, match="max_frame_size"):
        p2p.network.PeerNetwork(**args, max_frame_size=MAX_FRAME_BYTES + 1)


@pytest.mark.parametrize("where", ["constructor", "run"])
def test_start_turns_a_refused_setting_into_exit_2_without_a_traceback(
    tmp_path: Path, passphrase: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """A setting ``load_config`` let through but a component refuses (``ValueError``), whether the node's
    constructor or its ``run`` (inside a nursery: an exception group) raises it: one line, exit 2."""
    home = tmp_path / "home"
    assert main(["init", "--home", str(home)]) == 0
    capsys.readouterr()

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("max_frame_size must be in [0, 4294967279]")

    monkeypatch.setattr("node.node.PeerNetwork", refuse)  # built at the start of Node.run
    if where == "constructor":
        monkeypatch.setattr("node.cli.Node", refuse)
    assert main(["start", "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert err == "qenex-node: error: invalid setting: max_frame_size must be in [0, 4294967279]\n"
    store = LevelDBStore(data_path(home, load_config(home / "config.toml")))  # closed by start: reopens
    store.close()


def test_init_writes_the_defaults_and_refuses_a_second_init(tmp_path: Path, passphrase: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home)]) == 0
    assert load_config(home / "config.toml") == NodeConfig()
    genesis = load_genesis(home / "genesis.json")
    assert len(genesis.validators) == 1 and genesis.chain_id.startswith("qenex-")
    before = (home / "config.toml").read_bytes()
    capsys.readouterr()
    assert main(["init", "--home", str(home)]) == 2
    assert "already initialised" in capsys.readouterr().err
    assert (home / "config.toml").read_bytes() == before


def test_init_without_a_passphrase_is_an_error_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("QENEX_PASSPHRASE", raising=False)
    home = tmp_path / "home"
    assert main(["init", "--home", str(home)]) == 2
    assert "passphrase" in capsys.readouterr().err
    assert not home.exists()


def test_keygen_and_show_validator(tmp_path: Path, passphrase: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "key.json"
    assert main(["keygen", "--out", str(out), "--scheme", "Ed25519"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["keystore"] == str(out) and made["scheme"] == "Ed25519"
    assert "0x" + load_keystore(out, passphrase.encode()).address.hex() == made["address"]
    key_before = out.read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2  # never overwrites a key
    assert "refusing to overwrite" in capsys.readouterr().err and out.read_bytes() == key_before

    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--moniker", "v0"]) == 0
    init_line = capsys.readouterr().out
    assert main(["show-validator", "--home", str(home)]) == 0
    entry = json.loads(capsys.readouterr().out)
    [validator] = load_genesis(home / "genesis.json").validators
    assert entry["name"] == "v0" and entry["address"] == "0x" + validator.address.hex()
    assert entry["nodeId"] == "0x" + validator.node_id.hex()
    assert f"validator {entry['address']}, node id {entry['nodeId']}" in init_line


async def test_status_of_a_live_node(live_node: LiveNode, capsys: pytest.CaptureFixture[str]) -> None:
    # the blocking client runs in a thread, so that the node (on this Trio loop) can answer
    code = await trio.to_thread.run_sync(main, ["status", "--rpc", live_node.url])
    assert code == 0
    status = json.loads(capsys.readouterr().out)
    node = live_node.node
    assert status["chainId"] == node.chain_id == "qenex-test"
    assert status["height"] == node.chain.head.height and status["validators"] == 1
    assert status["nodeId"] == "0x" + node.node_key.address.hex()


async def test_status_of_no_node_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    code = await trio.to_thread.run_sync(main, ["status", "--rpc", url, "--timeout", "5"])
    assert code == 1
    captured = capsys.readouterr()
    assert f"no status from {url}" in captured.err and captured.out == ""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_start_stops_cleanly_on_signal_and_the_data_reopens(tmp_path: Path, sig: signal.Signals) -> None:
    """A real ``qenex-node start`` committing blocks exits 0 on ``sig``, logs a clean stop, and leaves
    a LevelDB that opens again (lock released) with a consistent chain at least as high as it was."""
    base = free_block(2)
    # empty blocks every 50 ms: a block is likely in flight when the signal comes
    layout = generate(tmp_path / "net", validators=1, base_rpc_port=base, base_p2p_port=base + 1, scrypt_n=2**10,
                      consensus=ConsensusSection(block_interval_ms=50, empty_block_interval_ms=50))
    node = layout.nodes[0]
    home = Path(node.home)
    config = load_config(home / "config.toml")
    running = await start_node(node)
    try:
        async with AsyncClient(node.rpc_url) as client:
            await poll_until(lambda: height_at_least(client, 3), what="the node commits 3 blocks", timeout=60,
                             tolerate=STARTING)
            seen = (await client.call("qnx_status"))["height"]
        running.process.send_signal(sig)
        with trio.fail_after(30):
            code = await running.process.wait()
        assert code == 0, node.log_path.read_text()[-3000:]
        log = node.log_path.read_text()
        assert f"signal {sig.name}: shutting down" in log and "stopped cleanly" in log
    finally:
        await stop_node(running)
    store = LevelDBStore(data_path(home, config))  # refused if the process still held the LOCK
    try:
        chain = ChainStore(store, load_genesis(home / "genesis.json"))  # StoreCorrupted if half-written
        assert chain.head.height >= seen
        assert chain.block(chain.head.height) is not None
    finally:
        store.close()
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.TransportError):  # and nothing serves RPC any more
            await http.get(node.rpc_url + "/health")


def test_an_unknown_state_compression_is_refused_at_load(tmp_path: Path) -> None:
    text = render_config(NodeConfig())
    assert '\ncompression = "none"\n' in text
    path = tmp_path / "config.toml"
    path.write_text(text.replace('\ncompression = "none"\n', '\ncompression = "lz4"\n'))
    with pytest.raises(ConfigError, match="state.compression must be one of none, snappy, got 'lz4'"):
        load_config(path)
    path.write_text(text.replace('\ncompression = "none"\n', '\ncompression = "snappy"\n'))
    assert load_config(path).state.compression == "snappy"
