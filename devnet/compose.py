"""The Docker devnet: ``qenex-devnet compose`` writes node homes and a ``docker-compose.yml`` for them.

``generate_docker`` creates the homes (keys, config.toml, one genesis) of ``validators`` validators
and ``observers`` observers for containers: every node listens on 0.0.0.0 at the same ports
(RPC 8545, P2P 26656) inside its own container, and dials the others by service name on a
bridge network. ``render_compose`` writes the compose text by hand (no YAML library is a
dependency): the same input gives the same bytes, so the committed ``devnet/docker-compose.yml`` is
checked against it. The text uses only block mappings, block sequences, plain scalars, JSON-style
flow sequences and double-quoted strings, which every YAML 1.2 parser reads alike.

Each service: the image of ``devnet/Dockerfile`` (non-root user); its home bind-mounted read-only
(config, genesis, keystores: nothing secret is baked into the image); its LevelDB in a named volume
(``node-i-data`` at ``/var/lib/qenex``, so ``docker compose down`` keeps the chain and ``down -v``
drops it); its RPC port published on the host's loopback (``127.0.0.1:<base + i>``); a health
check on ``GET /health``. The file is meant to live in ``devnet/``: the build context (``..``) and
the homes (``../<root>/<name>``) are relative to that directory, as Compose resolves them.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from devnet.layout import BASE_RPC_PORT, Layout, generate

IMAGE = "qenex-ledger:dev"
"""Tag of the image that ``devnet/Dockerfile`` builds."""

DOCKER_ROOT = ".devnet-docker"
"""Default directory of the container homes (beside ``.devnet/`` of the local devnet)."""

CONTAINER_ROOT = "/devnet"
"""Where the homes are mounted inside the containers (the Dockerfile's WORKDIR)."""

RPC_PORT = 8545
"""JSON-RPC port inside every container."""
P2P_PORT = 26656
"""P2P port inside every container."""
DATA_MOUNT = "/var/lib/qenex"
"""Where each node's named volume is mounted (the Dockerfile makes it writable by any uid)."""
DATA_DIR = f"{DATA_MOUNT}/data"
"""``[node] data_dir`` of the container homes: the LevelDB lives in the named volume."""
NETWORK = "qenex"
"""The bridge network of the services (service names resolve to the containers)."""


def _q(value: str | list[str]) -> str:
    """A YAML double-quoted scalar or flow sequence (JSON syntax, which YAML 1.2 includes)."""
    return json.dumps(value)


def names(validators: int, observers: int) -> list[str]:
    """Service (and node) names: ``node-0`` .. ``node-{n-1}``, then ``observer-0`` ..."""
    return [f"node-{i}" for i in range(validators)] + [f"observer-{k}" for k in range(observers)]


def host_home(root: str, name: str) -> str:
    """Host path of a node's home as written in the compose file (relative to ``devnet/``)."""
    return posixpath.normpath(posixpath.join("..", root, name))


def generate_docker(root: Path, validators: int = 4, observers: int = 0, *, scrypt_n: int = 1 << 14) -> Layout:
    """Create the container homes under ``root`` (removing an old tree): see the module docstring.

    Raises ``ValueError`` for fewer than one validator or a negative observer count.
    """
    all_names = names(validators, observers)
    return generate(root, validators=validators, observers=observers, base_rpc_port=RPC_PORT,
                    base_p2p_port=P2P_PORT, port_step=0, listen_host="0.0.0.0", data_dir=DATA_DIR,
                    scrypt_n=scrypt_n, peer_endpoint=lambda _i, j: (all_names[j], P2P_PORT))


def _service(name: str, role: str, root: str, host_rpc_port: int) -> list[str]:
    home = f"{CONTAINER_ROOT}/{name}"
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{RPC_PORT}/health', timeout=2)"
    return [
        f"  {name}:",
        f"    # {role}: RPC http://127.0.0.1:{host_rpc_port} on the host (JSON-RPC POST /, GET /health,",
        f"    # /ready, /metrics); P2P {name}:{P2P_PORT} on the {NETWORK} network",
        "    build:",
        "      context: ..",
        "      dockerfile: devnet/Dockerfile",
        f"    image: {IMAGE}",
        f"    command: {_q(['qenex-node', 'start', '--home', home])}",
        f"    user: {_q('${QENEX_UID:-1000}:${QENEX_GID:-1000}')}",
        "    volumes:",
        "      - type: bind",
        f"        source: {host_home(root, name)}",
        f"        target: {home}",
        "        read_only: true",
        "      - type: volume",
        f"        source: {name}-data",
        f"        target: {DATA_MOUNT}",
        "    ports:",
        f"      - {_q(f'127.0.0.1:{host_rpc_port}:{RPC_PORT}')}",
        "    networks:",
        f"      - {NETWORK}",
        "    init: true",
        "    healthcheck:",
        f"      test: {_q(['CMD', 'python', '-c', probe])}",
        "      interval: 5s",
        "      timeout: 3s",
        "      retries: 5",
        "      start_period: 20s",
        "    restart: unless-stopped",
        "    stop_signal: SIGTERM",
        "    stop_grace_period: 15s",
    ]


def render_compose(validators: int = 4, observers: int = 0, *, root: str = DOCKER_ROOT,
                   base_rpc_port: int = BASE_RPC_PORT) -> str:
    """The text of a docker-compose.yml running the homes ``generate_docker`` made under ``root``.

    Service i publishes its RPC on host port ``base_rpc_port + i``. Raises ``ValueError`` for fewer
    than one validator or a negative observer count.
    """
    if validators < 1 or observers < 0:
        raise ValueError("a devnet needs at least one validator (and no negative number of observers)")
    services = names(validators, observers)
    make = "qenex-devnet compose"
    if validators != 4:
        make += f" --validators {validators}"
    if observers:
        make += f" --observers {observers}"
    if root != DOCKER_ROOT:
        make += f" --home {root}"
    if base_rpc_port != BASE_RPC_PORT:
        make += f" --base-rpc-port {base_rpc_port}"
    compose = "docker compose -f devnet/docker-compose.yml"
    plural = "s" if observers > 1 else ""
    out = [
        f"# QENEX Ledger devnet in Docker: {validators} validators"
        + (f" and {observers} observer{plural}" if observers else "") + f" ({', '.join(services)}).",
        "# Generated by `qenex-devnet compose` (devnet/compose.py); do not edit by hand.",
        "#",
        "# Usage, from the repository root:",
        f"#   {make}    # writes {root}/ (keys, config.toml, genesis.json per node) and this file",
        f"#   {compose} up --build",
        f"#   {compose} ps      # health of each node",
        f"#   curl -s http://127.0.0.1:{base_rpc_port}/metrics  # node-0's Prometheus metrics",
        f"#   {compose} down    # stop; the chain stays in the named volumes (down -v drops them)",
        "#",
        f"# Each service runs `qenex-node start` on its home {host_home(root, 'node-0')[:-1]}i, bind-mounted",
        f"# read-only at {CONTAINER_ROOT}/<name>; its LevelDB is in the named volume <name>-data. Nodes listen",
        f"# on 0.0.0.0 inside their containers (RPC {RPC_PORT}, P2P {P2P_PORT}) and reach each other by service",
        f"# name on the bridge network {NETWORK}; only RPC is published, on the host's 127.0.0.1.",
        "# The homes belong to the user who generated them (the passphrase file is mode 0600), so the",
        "# containers run as QENEX_UID:QENEX_GID (default 1000:1000); if `id -u` gives another uid, run",
        f"#   QENEX_UID=$(id -u) QENEX_GID=$(id -g) {compose} up --build",
        "",
        "name: qenex-devnet",
        "",
        "services:",
    ]
    for i, name in enumerate(services):
        if i:
            out.append("")
        out += _service(name, "validator" if i < validators else "observer", root, base_rpc_port + i)
    out += ["", "volumes:"]
    for name in services:
        out += [f"  {name}-data:", f"    name: qenex-devnet-{name}-data"]
    out += ["", "networks:", f"  {NETWORK}:", "    name: qenex-devnet", "    driver: bridge"]
    return "\n".join(out) + "\n"
