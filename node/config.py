"""config.toml: every option, its default and unit.

``render_config`` writes a commented file (what ``qenex-node init`` leaves in the home
directory); ``load_config`` reads it back, refusing unknown sections and keys so that a typo is
an error, not a silent default. Paths are relative to the home directory.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from node.exceptions import ConfigError
from p2p.framing import MAX_FRAME_LIMIT
from p2p.session import TAG_LEN
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
    """[p2p] listener, peers, frame limit, admission limits, send queues, peer scores and bans, redial
    backoff: the constructor arguments of ``p2p.network.PeerNetwork`` (which documents each)."""

    host: str = "127.0.0.1"
    port: int = 26656
    peers: tuple[str, ...] = ()
    observers: tuple[str, ...] = ()
    max_frame_bytes: int = 16 * 1024 * 1024
    handshake_timeout_seconds: float = 5.0
    max_inbound_connections: int = 64
    max_pending_handshakes: int = 16
    max_pending_per_ip: int = 4
    max_attempts_per_ip: int = 30
    attempt_window_seconds: float = 10.0
    send_queue_messages: int = 1024
    send_queue_bytes: int = 64 * 1024 * 1024
    bulk_queue_messages: int = 1024
    bulk_queue_bytes: int = 8 * 1024 * 1024
    inbound_bytes_per_second: int = 64 * 1024 * 1024
    inbound_burst_bytes: int = 16 * 1024 * 1024
    ban_threshold: float = -100.0
    ban_seconds: float = 60.0
    score_recovery_per_second: float = 5.0
    reconnect_backoff_initial_seconds: float = 0.05
    reconnect_backoff_max_seconds: float = 5.0


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
    compact_proposals: bool = True


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
    compression: str = "none"


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


MAX_FRAME_BYTES = MAX_FRAME_LIMIT - TAG_LEN
"""Largest ``[p2p] max_frame_bytes``: a sealed frame (message + 16-byte tag) must fit the 4-byte length
header (``p2p.framing.MAX_FRAME_LIMIT``); ``p2p.network.PeerNetwork`` refuses more."""


class _Doc(NamedTuple):
    """What an option means and the unit its value is in (one of ``NUMBER_UNITS`` or ``VALUE_KINDS``)."""

    text: str
    unit: str


NUMBER_UNITS = frozenset({
    "TCP port", "bytes", "bytes/s", "seconds", "ms", "requests", "calls", "calls/s", "connections",
    "subscriptions", "items", "attempts", "messages", "points", "points/s", "transactions", "nonces",
    "versions", "entries", "nodes",
})
"""Units of the numeric options (int and float): every number in config.toml is in one of these."""

VALUE_KINDS = frozenset({
    "text", "path", "variable name", "IP address", "boolean", "list of origins", "list of peers",
    "list of node keys", "level name", "format name", "list of logger=LEVEL",
})
"""What the other (string, boolean, list) options hold, given where a number would give its unit."""

_DOCS: dict[str, dict[str, _Doc]] = {
    "node": {
        "moniker": _Doc("name of this node in logs and status", "text"),
        "validator_key": _Doc("keystore of the consensus (validator) key", "path"),
        "node_key": _Doc("keystore of the P2P identity key", "path"),
        "passphrase_file": _Doc("file holding the keystore passphrase (used if it exists)", "path"),
        "passphrase_env": _Doc("else: environment variable holding the passphrase", "variable name"),
        "data_dir": _Doc("LevelDB directory (blocks, state, receipts, consensus records)", "path"),
    },
    "rpc": {
        "host": _Doc("JSON-RPC listen address", "IP address"),
        "port": _Doc("JSON-RPC port (HTTP POST /, WebSocket /ws, GET /health, /ready, /metrics)", "TCP port"),
        "max_body_bytes": _Doc("largest request body or WebSocket message", "bytes"),
        "max_batch": _Doc("most requests in one JSON-RPC batch", "requests"),
        "max_wait_seconds": _Doc("longest timeout of qnx_sendRawTransactionAndWait", "seconds"),
        "max_connections": _Doc("most HTTP requests in progress plus WebSocket connections open at once (more: "
                                "HTTP 503 / WebSocket handshake refused, error -32005)", "connections"),
        "requests_per_second": _Doc("JSON-RPC calls per second per client IP, each call of a batch counted "
                                    "(more: error -32005 with retryAfterSeconds); 0 = unlimited", "calls/s"),
        "burst": _Doc("calls a client IP may make at once above that rate (token bucket size)", "calls"),
        "max_subscriptions_per_connection": _Doc("most qnx_subscribe subscriptions one WebSocket connection "
                                                 "holds", "subscriptions"),
        "ws_queue_size": _Doc("items queued for one WebSocket client (a response, or one subscription's pushes "
                              "of one block); a client falling this far behind is disconnected (close code "
                              "1008)", "items"),
        "cors_origins": _Doc("browser origins allowed to call (CORS), e.g. https://wallet.example; \"*\" = any",
                             "list of origins"),
        "admin_enabled": _Doc("serve admin_peers, admin_flushMempool, admin_setLogLevel (off: method not "
                              "found)", "boolean"),
        "admin_token": _Doc("when set, admin calls need the header Authorization: Bearer <token>; when empty, "
                            "they are served to loopback clients (127.0.0.0/8, ::1) only", "text"),
    },
    "p2p": {
        "host": _Doc("P2P listen address", "IP address"),
        "port": _Doc("P2P port", "TCP port"),
        "peers": _Doc("peers to dial, as 0x<node id>@host:port", "list of peers"),
        "observers": _Doc("non-validator nodes allowed to connect, as <scheme>:0x<node public key> "
                          "(qenex-node show-node prints it); they follow the chain and never vote",
                          "list of node keys"),
        "max_frame_bytes": _Doc("largest P2P message (a sealed frame adds a 16-byte tag); at most "
                                f"{MAX_FRAME_BYTES}", "bytes"),
        "handshake_timeout_seconds": _Doc("close a connection whose handshake is not done by then", "seconds"),
        "max_inbound_connections": _Doc("most authenticated inbound P2P connections open at once (more are "
                                        "closed after their handshake); connections still in the handshake "
                                        "are not counted here", "connections"),
        "max_pending_handshakes": _Doc("most inbound P2P connections in the handshake at once (more are closed "
                                       "at accept); kept apart from max_inbound_connections so that half-open "
                                       "connections never take a listed peer's slot", "connections"),
        "max_pending_per_ip": _Doc("most inbound P2P connections in the handshake at once from one remote IP "
                                   "(more are closed at accept)", "connections"),
        "max_attempts_per_ip": _Doc("most inbound connection attempts per remote IP within "
                                    "attempt_window_seconds", "attempts"),
        "attempt_window_seconds": _Doc("sliding window of max_attempts_per_ip", "seconds"),
        "send_queue_messages": _Doc("most consensus messages queued for one peer (a slow peer's messages are "
                                    "dropped beyond; consensus retransmits)", "messages"),
        "send_queue_bytes": _Doc("most bytes of consensus messages queued for one peer (dropped beyond)",
                                 "bytes"),
        "bulk_queue_messages": _Doc("most transaction gossip batches queued for one peer, in a lane of their own "
                                    "that never holds up consensus messages (dropped beyond; re-offered later)",
                                    "messages"),
        "bulk_queue_bytes": _Doc("most bytes of transaction gossip queued for one peer (dropped beyond)", "bytes"),
        "inbound_bytes_per_second": _Doc("read each peer at most this fast (a faster one is slowed, not "
                                         "dropped)", "bytes/s"),
        "inbound_burst_bytes": _Doc("bytes a peer may send at once above that rate", "bytes"),
        "ban_threshold": _Doc("ban a peer whose score falls to this (bad frame -50, bad message -10); "
                              "negative", "points"),
        "ban_seconds": _Doc("a banned peer is refused and not dialed for this long", "seconds"),
        "score_recovery_per_second": _Doc("a lowered peer score rises back toward 0 this fast", "points/s"),
        "reconnect_backoff_initial_seconds": _Doc("first delay before redialing a lost peer (doubles, with "
                                                  "jitter, on each failure)", "seconds"),
        "reconnect_backoff_max_seconds": _Doc("longest delay between redials of a peer", "seconds"),
    },
    "consensus": {
        "block_interval_ms": _Doc("the primary proposes a block this often when transactions wait", "ms"),
        "empty_block_interval_ms": _Doc("...and an empty block after this long idle (0: never)", "ms"),
        "max_block_txs": _Doc("most transactions in a block (a full block is proposed at once)", "transactions"),
        "retransmit_ms": _Doc("re-send own pre-prepare and votes of an undecided block this often", "ms"),
        "status_interval_ms": _Doc("announce our height to peers this often (catch-up)", "ms"),
        "max_clock_drift_ms": _Doc("refuse blocks stamped further than this in the future", "ms"),
        "view_timeout_ms": _Doc("no commit for this long while work waits: change view (doubles each time)",
                                "ms"),
        "compact_proposals": _Doc("send own PRE-PREPAREs as the header and the transactions' wire ids; peers "
                                  "rebuild the block from their mempools and ask for the full one if they "
                                  "miss any (false: always send the full block)", "boolean"),
    },
    "mempool": {
        "max_txs": _Doc("most pending transactions", "transactions"),
        "max_bytes": _Doc("most pending transaction bytes", "bytes"),
        "nonce_window": _Doc("accept nonces up to this far above the account's next nonce", "nonces"),
        "ttl_seconds": _Doc("drop a transaction still pending after this long", "seconds"),
    },
    "state": {
        "retention_versions": _Doc("keep the state of the newest N block heights readable and provable "
                                   "(reads, qnx_getProof); older versions are pruned", "versions"),
        "prune_batch": _Doc("most deletions of one background pruning step (one unsynced batch)", "entries"),
        "prune_interval_ms": _Doc("run a pruning step this often while old versions remain", "ms"),
        "cache_nodes": _Doc("internal tree nodes of the newest state version kept in memory (about 360 bytes "
                            "each; 400,000 hold a tree of 10^6 keys); 0: none", "nodes"),
        "cache_values": _Doc("latest values of the most recently read or written keys kept in memory; 0: none",
                             "entries"),
        "compression": _Doc("LevelDB compression of the table blocks written: none (signatures, keys and "
                            "hashes do not compress) or snappy; either reads a database written with the other",
                            "format name"),
    },
    "log": {
        "level": _Doc("DEBUG, INFO, WARNING or ERROR (SIGHUP re-reads the [log] section)", "level name"),
        "format": _Doc("kv (logfmt key=value lines) or json (one JSON object per line)", "format name"),
        "modules": _Doc("per-module levels, as logger=LEVEL, e.g. qenex.p2p=DEBUG or qenex.rpc=WARNING",
                        "list of logger=LEVEL"),
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


def _toml_inline(v: Any) -> str:
    """``v`` as a one-line TOML value (lists inline), for the ``default:`` comments."""
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_value(v)


def render_config(cfg: NodeConfig) -> str:
    """config.toml text: every option of every section, each after a comment giving its meaning and a
    line ``# unit: <unit>; default: <TOML value>`` (``_DOCS``). ``load_config`` reads it back to ``cfg``.

    Raises ``KeyError`` if an option has no entry in ``_DOCS`` (a new option must be documented).
    """
    default = NodeConfig()
    out = ["# QENEX Ledger node configuration. Every option is listed with what it means, its unit and its",
           "# default. Paths are relative to the home directory.", ""]
    for section in dataclasses.fields(cfg):
        sec, dsec = getattr(cfg, section.name), getattr(default, section.name)
        out.append(f"[{section.name}]")
        for f in dataclasses.fields(sec):
            doc = _DOCS[section.name][f.name]
            out.extend("# " + line for line in textwrap.wrap(doc.text, 100, break_on_hyphens=False))
            out.append(f"# unit: {doc.unit}; default: {_toml_inline(getattr(dsec, f.name))}")
            out.append(f"{f.name} = {_toml_value(getattr(sec, f.name))}")
        out.append("")
    return "\n".join(out)


def load_config(path: Path) -> NodeConfig:
    """Read config.toml. Raises ``ConfigError`` for unreadable files, unknown keys, wrong types and values
    out of range (checked here, so that a bad file is refused before anything starts)."""
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
    p2p = cfg.p2p
    if not (0 <= p2p.max_frame_bytes <= MAX_FRAME_BYTES and p2p.handshake_timeout_seconds > 0
            and p2p.max_inbound_connections >= 1 and p2p.max_pending_handshakes >= 1 and p2p.max_pending_per_ip >= 1
            and p2p.max_attempts_per_ip >= 1 and p2p.attempt_window_seconds > 0 and p2p.send_queue_messages >= 1
            and p2p.send_queue_bytes >= 1 and p2p.bulk_queue_messages >= 1 and p2p.bulk_queue_bytes >= 1
            and p2p.inbound_bytes_per_second >= 1 and p2p.inbound_burst_bytes >= 1
            and p2p.ban_threshold < 0 and p2p.ban_seconds > 0 and p2p.score_recovery_per_second >= 0
            and 0 < p2p.reconnect_backoff_initial_seconds <= p2p.reconnect_backoff_max_seconds):
        raise ConfigError(f"{path}: [p2p] needs 0 <= max_frame_bytes <= {MAX_FRAME_BYTES}; handshake_timeout_seconds, "
                          "attempt_window_seconds and ban_seconds > 0; max_inbound_connections, "
                          "max_pending_handshakes, max_pending_per_ip, max_attempts_per_ip, "
                          "send_queue_messages, send_queue_bytes, bulk_queue_messages, bulk_queue_bytes, "
                          "inbound_bytes_per_second and inbound_burst_bytes >= 1; ban_threshold < 0; "
                          "score_recovery_per_second >= 0; 0 < reconnect_backoff_initial_seconds <= "
                          "reconnect_backoff_max_seconds")
    cons = cfg.consensus
    if not (cons.block_interval_ms >= 1 and cons.empty_block_interval_ms >= 0 and cons.max_block_txs >= 1
            and cons.retransmit_ms >= 1 and cons.status_interval_ms >= 1 and cons.max_clock_drift_ms >= 1
            and cons.view_timeout_ms >= 1):
        raise ConfigError(f"{path}: [consensus] needs block_interval_ms, retransmit_ms, status_interval_ms, "
                          "max_clock_drift_ms, view_timeout_ms and max_block_txs >= 1; empty_block_interval_ms >= 0")
    mp = cfg.mempool
    if not (mp.max_txs >= 1 and mp.max_bytes >= 1 and mp.nonce_window >= 1 and mp.ttl_seconds >= 1):
        raise ConfigError(f"{path}: [mempool] needs max_txs, max_bytes, nonce_window and ttl_seconds >= 1")
    st = cfg.state
    if (st.retention_versions < 1 or st.prune_batch < 1 or st.prune_interval_ms < 1
            or st.cache_nodes < 0 or st.cache_values < 0):
        raise ConfigError(f"{path}: [state] needs retention_versions, prune_batch and prune_interval_ms >= 1, "
                          "cache_nodes and cache_values >= 0")
    from state.kv import COMPRESSIONS

    if st.compression not in COMPRESSIONS:
        raise ConfigError(f"{path}: state.compression must be one of {', '.join(COMPRESSIONS)}, "
                          f"got {st.compression!r}")
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
