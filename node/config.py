"""config.toml: every option, its default and unit.

``render_config`` writes a commented file (what ``qenex-node init`` leaves in the home
directory); ``load_config`` reads it back, refusing unknown sections and keys so that a typo is
an error, not a silent default. Paths are relative to the home directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.exceptions import ConfigError
from state.jmt import DEFAULT_CACHE_NODES, DEFAULT_CACHE_VALUES


@dataclass(frozen=True)
class Peer:
    """A peer to dial: its node id (20-byte address of its node key) and P2P endpoint."""

    node_id: bytes
    host: str
    port: int

    def render(self) -> str:
        """``0x<node id>@host:port``."""
        return f"0x{self.node_id.hex()}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Peer:
        """Parse ``0x<node id>@host:port``. Raises ``ConfigError``."""
        try:
            node, endpoint = text.split("@", 1)
            host, port = endpoint.rsplit(":", 1)
            node_id = bytes.fromhex(node.removeprefix("0x"))
            if len(node_id) != 20:
                raise ValueError("node id must be 20 bytes")
            return cls(node_id, host, int(port))
        except ValueError as err:
            raise ConfigError(f"bad peer {text!r} (want 0x<node id>@host:port): {err}") from err


@dataclass(frozen=True)
class Observer:
    """A non-validator node allowed to connect: its node key (scheme name, public key)."""

    scheme: str
    public_key: bytes

    @property
    def node_id(self) -> bytes:
        """The observer's node id: the address of its node key."""
        from crypto.keys import address_of
        from crypto.signatures import scheme_by_name

        return address_of(scheme_by_name(self.scheme).tag, self.public_key)

    def render(self) -> str:
        """``<scheme name>:0x<public key>``."""
        return f"{self.scheme}:0x{self.public_key.hex()}"

    @classmethod
    def parse(cls, text: str) -> Observer:
        """Parse ``<scheme name>:0x<public key hex>`` (what ``qenex-node show-node`` prints). Raises ``ConfigError``."""
        from crypto.exceptions import UnknownScheme
        from crypto.signatures import scheme_by_name

        try:
            scheme, key = text.split(":", 1)
            if not scheme_by_name(scheme).post_quantum:
                raise ValueError(f"{scheme} is not post-quantum: node keys must be ML-DSA or SLH-DSA")
            public_key = bytes.fromhex(key.removeprefix("0x"))
            if not public_key:
                raise ValueError("empty public key")
            return cls(scheme, public_key)
        except (ValueError, UnknownScheme) as err:
            raise ConfigError(f"bad observer {text[:40]!r}... (want <scheme>:0x<node public key>): {err}") from err


@dataclass(frozen=True)
class NodeSection:
    """[node] moniker and key files."""

    moniker: str = "node"
    validator_key: str = "keys/validator.json"
    node_key: str = "keys/node.json"
    passphrase_file: str = "passphrase"
    passphrase_env: str = "QENEX_PASSPHRASE"
    data_dir: str = "data"


@dataclass(frozen=True)
class RPCSection:
    """[rpc] JSON-RPC listener (HTTP and WebSocket), limits, CORS and admin methods (``node.rpc.server``).

    Rate limiting is opt-in (``requests_per_second = 0`` serves without limit), as in Besu and CometBFT:
    the listener binds 127.0.0.1 by default, and a node exposed to untrusted clients sets a rate.
    """

    host: str = "127.0.0.1"
    port: int = 8545
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 100
    max_wait_seconds: float = 120.0
    max_connections: int = 1000
    requests_per_second: float = 0.0
    burst: int = 200
    max_subscriptions_per_connection: int = 100
    ws_queue_size: int = 1024
    cors_origins: tuple[str, ...] = ()
    admin_enabled: bool = False
    admin_token: str = ""


@dataclass(frozen=True)
class P2PSection:
    """[p2p] listener, peers, frame limit, admission limits, peer bans (see ``p2p.network``)."""

    host: str = "127.0.0.1"
    port: int = 26656
    peers: tuple[str, ...] = ()
    observers: tuple[str, ...] = ()
    max_frame_bytes: int = 16 * 1024 * 1024
    handshake_timeout_seconds: float = 5.0
    max_inbound_connections: int = 64
    max_attempts_per_ip: int = 30
    attempt_window_seconds: float = 10.0
    send_queue_bytes: int = 64 * 1024 * 1024
    inbound_bytes_per_second: int = 64 * 1024 * 1024
    inbound_burst_bytes: int = 16 * 1024 * 1024
    ban_threshold: float = -100.0
    ban_seconds: float = 60.0


@dataclass(frozen=True)
class ConsensusSection:
    """[consensus] block production and retransmission timing."""

    block_interval_ms: int = 200
    empty_block_interval_ms: int = 1000
    max_block_txs: int = 500
    retransmit_ms: int = 1000
    status_interval_ms: int = 1000
    max_clock_drift_ms: int = 5000
    view_timeout_ms: int = 5000


@dataclass(frozen=True)
class MempoolSection:
    """[mempool] capacity and nonce window."""

    max_txs: int = 50_000
    max_bytes: int = 256 * 1024 * 1024
    nonce_window: int = 1024
    ttl_seconds: int = 600


@dataclass(frozen=True)
class StateSection:
    """[state] retention and pruning of past state versions (one version per block height)."""

    retention_versions: int = 1000
    prune_batch: int = 5000
    prune_interval_ms: int = 200
    cache_nodes: int = DEFAULT_CACHE_NODES
    cache_values: int = DEFAULT_CACHE_VALUES


@dataclass(frozen=True)
class LogSection:
    """[log] level, format and per-module levels (re-read on SIGHUP)."""

    level: str = "INFO"
    format: str = "kv"
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeConfig:
    """The whole config.toml."""

    node: NodeSection = field(default_factory=NodeSection)
    rpc: RPCSection = field(default_factory=RPCSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    log: LogSection = field(default_factory=LogSection)
    state: StateSection = field(default_factory=StateSection)

    def peers(self) -> list[Peer]:
        """The parsed ``[p2p] peers``."""
        return [Peer.parse(p) for p in self.p2p.peers]

    def observers(self) -> list[Observer]:
        """The parsed ``[p2p] observers``."""
        return [Observer.parse(o) for o in self.p2p.observers]


_DOCS = {
    "node": {
        "moniker": "name of this node in logs and status",
        "validator_key": "keystore of the consensus (validator) key",
        "node_key": "keystore of the P2P identity key",
        "passphrase_file": "file holding the keystore passphrase (used if it exists)",
        "passphrase_env": "else: environment variable holding the passphrase",
        "data_dir": "LevelDB directory (blocks, state, receipts, consensus records)",
    },
    "rpc": {
        "host": "JSON-RPC listen address",
        "port": "JSON-RPC port (HTTP POST /, WebSocket /ws, GET /health, /ready, /metrics)",
        "max_body_bytes": "largest request body or WebSocket message, bytes",
        "max_batch": "most requests in one JSON-RPC batch",
        "max_wait_seconds": "longest timeout of qnx_sendRawTransactionAndWait, seconds",
        "max_connections": "most HTTP requests in progress plus WebSocket connections open at once (more: "
                           "HTTP 503 / WebSocket handshake refused, error -32005)",
        "requests_per_second": "JSON-RPC calls per second per client IP, each call of a batch counted "
                               "(more: error -32005 with retryAfterSeconds), calls/s; 0 = unlimited",
        "burst": "calls a client IP may make at once above that rate (token bucket size), calls",
        "max_subscriptions_per_connection": "most qnx_subscribe subscriptions one WebSocket connection holds",
        "ws_queue_size": "items queued for one WebSocket client (a response, or one subscription's pushes of one "
                         "block); a client falling this far behind is disconnected (close code 1008), items",
        "cors_origins": "browser origins allowed to call (CORS), e.g. https://wallet.example; \"*\" = any",
        "admin_enabled": "serve admin_peers, admin_flushMempool, admin_setLogLevel (off: method not found)",
        "admin_token": "when set, admin calls need the header Authorization: Bearer <token>; when empty, they "
                       "are served to loopback clients (127.0.0.0/8, ::1) only",
    },
    "p2p": {
        "host": "P2P listen address",
        "port": "P2P port",
        "peers": "peers to dial, as 0x<node id>@host:port",
        "observers": "non-validator nodes allowed to connect, as <scheme>:0x<node public key> "
                     "(qenex-node show-node prints it); they follow the chain and never vote",
        "max_frame_bytes": "largest P2P message (a sealed frame adds a 16-byte tag), bytes",
        "handshake_timeout_seconds": "close a connection whose handshake is not done by then, seconds",
        "max_inbound_connections": "most accepted P2P connections open at once (more are closed at accept)",
        "max_attempts_per_ip": "most inbound connection attempts per remote IP within attempt_window_seconds",
        "attempt_window_seconds": "sliding window of max_attempts_per_ip, seconds",
        "send_queue_bytes": "most bytes queued for one peer (a slow peer's messages are dropped beyond), bytes",
        "inbound_bytes_per_second": "read each peer at most this fast (a faster one is slowed, not dropped), bytes/s",
        "inbound_burst_bytes": "bytes a peer may send at once above that rate, bytes",
        "ban_threshold": "ban a peer whose score falls to this (bad frame -50, bad message -10, +5/s), points",
        "ban_seconds": "a banned peer is refused and not dialed for this long, seconds",
    },
    "consensus": {
        "block_interval_ms": "the primary proposes a block this often when transactions wait, ms",
        "empty_block_interval_ms": "...and an empty block after this long idle, ms (0: never)",
        "max_block_txs": "most transactions in a block (a full block is proposed at once)",
        "retransmit_ms": "re-send own pre-prepare and votes of an undecided block this often, ms",
        "status_interval_ms": "announce our height to peers this often (catch-up), ms",
        "max_clock_drift_ms": "refuse blocks stamped further than this in the future, ms",
        "view_timeout_ms": "no commit for this long while work waits: change view (doubles each time), ms",
    },
    "mempool": {
        "max_txs": "most pending transactions",
        "max_bytes": "most pending transaction bytes",
        "nonce_window": "accept nonces up to this far above the account's next nonce",
        "ttl_seconds": "drop a transaction still pending after this long, seconds",
    },
    "state": {
        "retention_versions": "keep the state of the newest N block heights readable and provable "
                              "(reads, qnx_getProof); older versions are pruned, versions",
        "prune_batch": "most deletions of one background pruning step (one unsynced batch), entries",
        "prune_interval_ms": "run a pruning step this often while old versions remain, ms",
        "cache_nodes": "internal tree nodes of the newest state version kept in memory (about 360 bytes "
                       "each; 400,000 hold a tree of 10^6 keys), nodes (0: none)",
        "cache_values": "latest values of the most recently read or written keys kept in memory, "
                        "entries (0: none)",
    },
    "log": {
        "level": "DEBUG, INFO, WARNING or ERROR (SIGHUP re-reads the [log] section)",
        "format": "kv (logfmt key=value lines) or json (one JSON object per line)",
        "modules": "per-module levels, as logger=LEVEL, e.g. qenex.p2p=DEBUG or qenex.rpc=WARNING",
    },
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple | list):
        if not v:
            return "[]"
        return "[\n" + "".join(f"    {_toml_value(x)},\n" for x in v) + "]"
    raise TypeError(type(v))


def render_config(cfg: NodeConfig) -> str:
    """config.toml text with every option, a comment on each, and the default where it differs."""
    default = NodeConfig()
    out = ["# QENEX Ledger node configuration. Every option is listed with what it means;",
           "# units are in the comment. Paths are relative to the home directory.", ""]
    for section in dataclasses.fields(cfg):
        sec, dsec = getattr(cfg, section.name), getattr(default, section.name)
        out.append(f"[{section.name}]")
        for f in dataclasses.fields(sec):
            value, dvalue = getattr(sec, f.name), getattr(dsec, f.name)
            note = _DOCS[section.name][f.name]
            if value != dvalue:
                note += f" (default {_toml_value(dvalue) if not isinstance(dvalue, tuple) else list(dvalue)})"
            out.append(f"# {note}")
            out.append(f"{f.name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def load_config(path: Path) -> NodeConfig:
    """Read config.toml. Raises ``ConfigError`` for unreadable files, unknown keys, wrong types."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(NodeConfig):
        cls = f.default_factory  # type: ignore[misc]
        raw = doc.pop(f.name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{f.name}] must be a table")
        known = {x.name: x for x in dataclasses.fields(cls)}
        values = {}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown option {f.name}.{key}")
            want = type(getattr(cls(), key))
            if want is tuple:
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    raise ConfigError(f"{path}: {f.name}.{key} must be a list of strings")
                value = tuple(value)
            elif want is float and isinstance(value, int):
                value = float(value)
            elif not isinstance(value, want) or isinstance(value, bool) != (want is bool):
                raise ConfigError(f"{path}: {f.name}.{key} must be {want.__name__}, got {value!r}")
            values[key] = value
        sections[f.name] = cls(**values)
    if doc:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(doc))}")
    cfg = NodeConfig(**sections)
    rpc = cfg.rpc
    if (rpc.requests_per_second < 0 or rpc.burst < 1 or rpc.max_connections < 1
            or rpc.max_subscriptions_per_connection < 0 or rpc.ws_queue_size < 2 * rpc.max_subscriptions_per_connection
            or rpc.ws_queue_size < 1):
        raise ConfigError(f"{path}: [rpc] needs requests_per_second >= 0, burst >= 1, max_connections >= 1, "
                          "max_subscriptions_per_connection >= 0 and ws_queue_size >= 1 and at least twice "
                          "max_subscriptions_per_connection (one block can queue an item per subscription)")
    st = cfg.state
    if (st.retention_versions < 1 or st.prune_batch < 1 or st.prune_interval_ms < 1
            or st.cache_nodes < 0 or st.cache_values < 0):
        raise ConfigError(f"{path}: [state] needs retention_versions, prune_batch and prune_interval_ms >= 1, "
                          "cache_nodes and cache_values >= 0")
    cfg.peers()  # validate
    cfg.observers()
    from node.logs import FORMATS, parse_modules

    if cfg.log.format not in FORMATS:
        raise ConfigError(f"{path}: log.format must be one of {', '.join(FORMATS)}, got {cfg.log.format!r}")
    try:
        parse_modules((f"qenex={cfg.log.level}", *cfg.log.modules))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg
