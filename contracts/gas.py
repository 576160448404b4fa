"""The gas table: every cost the VM charges, in one place (units of gas).

Costs follow the shape of Ethereum's schedule (Yellow Paper, Appendix G: a base per transaction,
per byte of transaction data, per storage read and write, per event and per event byte), scaled to
what our operations cost; a Python VM has no opcodes, so computation is charged per call.
"""

from __future__ import annotations

from typing import Final

TX_BASE: Final = 10_000
"""Intrinsic cost of any transaction (signature check, nonce update)."""
TX_BYTE: Final = 2
"""Per byte of the transaction's signing bytes."""
CALL: Final = 700
"""Per contract call (top-level or nested)."""
DEPLOY: Final = 20_000
"""Per contract instance created."""
SLOAD: Final = 200
"""Per storage read."""
SSTORE: Final = 5_000
"""Per storage write."""
LOG: Final = 375
"""Per event."""
LOG_BYTE: Final = 8
"""Per byte of the event's canonical encoding ``encode((name, topics, data))``."""

MAX_CALL_DEPTH: Final = 16
"""Deepest nesting of contract calls."""
DEFAULT_BLOCK_GAS_LIMIT: Final = 2_000_000_000
"""Sum of the gas limits of a block's transactions, unless genesis sets ``blockGasLimit``."""
MAX_TX_GAS: Final = 50_000_000
"""Largest gas limit one transaction may ask for."""
READ_CALL_GAS: Final = 10_000_000
"""Gas given to a read-only ``qnx_call``."""


def intrinsic_gas(signing_bytes_len: int) -> int:
    """Gas charged before any call runs: ``TX_BASE + TX_BYTE * len(signing bytes)``."""
    return TX_BASE + TX_BYTE * signing_bytes_len
