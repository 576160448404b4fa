"""Creating node homes: keys, config.toml and genesis.json (``qenex-node init`` and the devnet).

A home directory holds::

    config.toml            every option, commented (node.config)
    genesis.json           chain id, genesis time, validator set (node.genesis)
    keys/validator.json    encrypted consensus key (crypto.keystore)
    keys/node.json         encrypted P2P identity key
    passphrase             the keystore passphrase (mode 0600) unless given by environment
    data/                  LevelDB, created on first start
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crypto.keys import KeyPair
from crypto.keystore import DEFAULT_SCRYPT_N, load_keystore, read_passphrase, save_keystore
from crypto.signatures import DEFAULT_SCHEME
from node.config import NodeConfig, load_config, render_config
from node.exceptions import ConfigError
from node.genesis import load_genesis
from state.types import Genesis, Validator


@dataclass(frozen=True)
class NodeKeys:
    """A node's consensus key and P2P identity key."""

    validator: KeyPair
    node: KeyPair


def write_passphrase(path: Path, passphrase: bytes) -> None:
    """Write a passphrase file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(passphrase + b"\n")


def init_home(
    home: Path, config: NodeConfig, passphrase: bytes, *, keys: NodeKeys | None = None,
    scrypt_n: int = DEFAULT_SCRYPT_N, write_passphrase_file: bool = True,
) -> NodeKeys:
    """Create ``home`` with fresh (or given) keys and ``config``; genesis is written separately.

    Raises ``ConfigError`` if ``home`` already holds a config.
    """
    home.mkdir(parents=True, exist_ok=True)
    if (home / "config.toml").exists():
        raise ConfigError(f"{home} is already initialised (config.toml exists)")
    keys = keys or NodeKeys(KeyPair.generate(DEFAULT_SCHEME), KeyPair.generate(DEFAULT_SCHEME))
    (home / "keys").mkdir(exist_ok=True, mode=0o700)
    save_keystore(home / config.node.validator_key, keys.validator, passphrase, scrypt_n=scrypt_n)
    save_keystore(home / config.node.node_key, keys.node, passphrase, scrypt_n=scrypt_n)
    if write_passphrase_file:
        write_passphrase(home / config.node.passphrase_file, passphrase)
    (home / "config.toml").write_text(render_config(config))
    return keys


def validator_entry(name: str, keys: NodeKeys) -> Validator:
    """The genesis entry of a validator with ``keys``."""
    return Validator(name, keys.validator.address, keys.validator.scheme_tag, keys.validator.public_key,
                     keys.node.scheme_tag, keys.node.public_key)


@dataclass(frozen=True)
class LoadedHome:
    """A home directory opened for ``start``: config, genesis and decrypted keys."""

    home: Path
    config: NodeConfig
    genesis: Genesis
    keys: NodeKeys


def open_home(home: Path) -> LoadedHome:
    """Load config.toml, genesis.json and the keystores of ``home``. Raises ``ConfigError``."""
    from crypto.exceptions import KeystoreError

    config = load_config(home / "config.toml")
    genesis = load_genesis(home / "genesis.json")
    pfile = home / config.node.passphrase_file
    try:
        if pfile.exists():
            passphrase = read_passphrase(file=pfile)
        else:
            passphrase = read_passphrase(env=config.node.passphrase_env)
        keys = NodeKeys(load_keystore(home / config.node.validator_key, passphrase),
                        load_keystore(home / config.node.node_key, passphrase))
    except KeystoreError as err:
        raise ConfigError(str(err)) from err
    return LoadedHome(home, config, genesis, keys)
