"""``qenex-node``: init | start | keygen | show-validator | status.

    qenex-node init --home DIR [--moniker NAME] [--chain-id ID]   # keys, config.toml, one-validator genesis
    qenex-node start --home DIR                                   # run until SIGINT/SIGTERM
    qenex-node keygen --out FILE [--scheme ML-DSA-44]             # an encrypted keystore
    qenex-node show-validator --home DIR                          # this node's genesis entry (JSON)
    qenex-node show-node --home DIR                               # node id and [p2p] observers entry
    qenex-node status [--rpc URL] [--timeout S]                   # qnx_status of a running node

The keystore passphrase is read from ``--passphrase-file`` or the environment variable
``QENEX_PASSPHRASE``; it is never an argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import trio

from crypto.exceptions import KeystoreError
from node.config import NodeConfig
from node.exceptions import ConfigError, NodeError
from node.logs import configure as configure_logging
from node.node import Node
from state.exceptions import StateError


def _passphrase(args: argparse.Namespace) -> bytes:
    from crypto.keystore import read_passphrase

    if args.passphrase_file:
        return read_passphrase(file=args.passphrase_file)
    return read_passphrase(env="QENEX_PASSPHRASE")


def cmd_init(args: argparse.Namespace) -> int:
    from node.genesis import save_genesis
    from node.setup import init_home, validator_entry
    from state.types import Genesis

    home = Path(args.home)
    from node.config import NodeSection

    config = NodeConfig(node=NodeSection(moniker=args.moniker))
    keys = init_home(home, config, _passphrase(args), write_passphrase_file=bool(args.write_passphrase_file))
    chain_id = args.chain_id or f"qenex-{os.urandom(3).hex()}"
    save_genesis(home / "genesis.json",
                 Genesis(chain_id, int(time.time() * 1000), (validator_entry(args.moniker, keys),)))
    print(f"initialised {home}: chain {chain_id}, validator 0x{keys.validator.address.hex()}, "
          f"node id 0x{keys.node.address.hex()}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from crypto.keys import KeyPair
    from crypto.keystore import save_keystore
    from crypto.signatures import scheme_by_name

    key = KeyPair.generate(scheme_by_name(args.scheme))
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; refusing to overwrite a key")
    save_keystore(out, key, _passphrase(args))
    print(json.dumps({"address": "0x" + key.address.hex(), "scheme": args.scheme, "keystore": str(out)}))
    return 0


def cmd_show_validator(args: argparse.Namespace) -> int:
    from node.genesis import genesis_to_json
    from node.setup import open_home, validator_entry
    from state.types import Genesis

    loaded = open_home(Path(args.home))
    entry = validator_entry(loaded.config.node.moniker, loaded.keys)
    doc = genesis_to_json(Genesis("x", 0, (entry,)))["validators"][0]
    doc["nodeId"] = "0x" + entry.node_id.hex()
    print(json.dumps(doc, indent=2))
    return 0


def cmd_show_node(args: argparse.Namespace) -> int:
    from crypto.signatures import scheme_by_tag
    from node.config import Observer
    from node.setup import open_home

    loaded = open_home(Path(args.home))
    node = loaded.keys.node
    entry = Observer(scheme_by_tag(node.scheme_tag).name, node.public_key)
    print(json.dumps({"nodeId": "0x" + node.address.hex(), "observerEntry": entry.render()}, indent=2))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print ``qnx_status`` of the node at ``--rpc`` as JSON; 1 (with the reason on stderr) when the node
    cannot be reached or answers with an error."""
    import httpx

    from node.rpc.client import Client
    from node.rpc.errors import RPCError

    client = Client(args.rpc, timeout=args.timeout)
    try:
        status = client.call("qnx_status")
    except (httpx.TransportError, RPCError) as err:
        print(f"qenex-node: error: no status from {args.rpc}: {str(err) or type(err).__name__}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(status, indent=2))
    return 0


def _reload_log_levels(config_path: Path) -> None:
    """SIGHUP: re-read the [log] section of config.toml and apply its levels (a bad file changes nothing)."""
    from node.config import load_config
    from node.logs import apply_levels

    log = logging.getLogger("qenex.node")
    try:
        section = load_config(config_path).log
        apply_levels(section)
    except ConfigError as err:
        log.error("SIGHUP: log levels unchanged: %s", err)
        return
    log.warning("SIGHUP: log level %s, modules %s", section.level, ", ".join(section.modules) or "none")


async def _run_until_signal(node: Node, config_path: Path | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run)

            async def watch() -> None:
                async for sig in signals:
                    if sig == signal.SIGHUP:
                        if config_path is not None:
                            _reload_log_levels(config_path)
                        continue
                    logging.getLogger("qenex.node").info("signal %s: shutting down", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)


def _first_leaf(group: BaseExceptionGroup[ValueError]) -> ValueError:
    """The first exception of a (possibly nested) group of ``ValueError``."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _setup_error(err: ValueError) -> int:
    """Report a setting refused while the node starts (no traceback; it is logged at DEBUG); exit 2."""
    logging.getLogger("qenex.node").debug("start refused", exc_info=err)
    print(f"qenex-node: error: invalid setting: {err}", file=sys.stderr)
    return 2


def cmd_start(args: argparse.Namespace) -> int:
    from node.node import data_path
    from node.setup import open_home
    from state.kv import LevelDBStore

    home = Path(args.home)
    loaded = open_home(home)
    configure_logging(loaded.config.log)
    store = LevelDBStore(data_path(home, loaded.config), compression=loaded.config.state.compression)
    try:
        node = Node(config=loaded.config, genesis=loaded.genesis, store=store, node_key=loaded.keys.node,
                    validator_key=loaded.keys.validator)
        trio.run(_run_until_signal, node, home / "config.toml")
    except ValueError as err:  # a setting load_config let through, refused by a component's constructor
        return _setup_error(err)
    except BaseExceptionGroup as group:  # the same, raised in Node.run (inside its nursery)
        refused, rest = group.split(ValueError)
        if refused is None or rest is not None:
            raise
        return _setup_error(_first_leaf(refused))
    finally:
        store.close()
    logging.getLogger("qenex.node").info("stopped cleanly")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qenex-node``."""
    p = argparse.ArgumentParser(prog="qenex-node", description="QENEX Ledger validator node")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("init", help="create keys, config.toml and a one-validator genesis")
    s.add_argument("--home", required=True)
    s.add_argument("--moniker", default="node")
    s.add_argument("--chain-id")
    s.add_argument("--passphrase-file")
    s.add_argument("--write-passphrase-file", action="store_true",
                   help="store the passphrase in HOME/passphrase (devnets only)")
    s.set_defaults(func=cmd_init)
    s = sub.add_parser("start", help="run the node until SIGINT/SIGTERM")
    s.add_argument("--home", required=True)
    s.set_defaults(func=cmd_start)
    s = sub.add_parser("keygen", help="write a new encrypted keystore")
    s.add_argument("--out", required=True)
    s.add_argument("--scheme", default="ML-DSA-44")
    s.add_argument("--passphrase-file")
    s.set_defaults(func=cmd_keygen)
    s = sub.add_parser("show-validator", help="print this node's genesis validator entry")
    s.add_argument("--home", required=True)
    s.set_defaults(func=cmd_show_validator)
    s = sub.add_parser("show-node", help="print this node's id and its [p2p] observers entry for the validators")
    s.add_argument("--home", required=True)
    s.set_defaults(func=cmd_show_node)
    s = sub.add_parser("status", help="qnx_status of a running node")
    s.add_argument("--rpc", default="http://127.0.0.1:8545")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node (default 10)")
    s.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qenex-node``; exit status 0 on success, 1 when ``status`` gets no answer, 2 on a
    configuration or keystore error (a missing passphrase, an existing home or key file, a bad config.toml)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, NodeError, StateError, KeystoreError) as err:
        print(f"qenex-node: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
