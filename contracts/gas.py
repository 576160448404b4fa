"""The gas table: every cost the VM charges, in one place (units of gas).

Costs follow the shape of Ethereum's schedule (Yellow Paper, Appendix G: a base per transaction,
per byte of transaction data, per storage read and write, per event and per event byte), scaled to
what our operations cost. A Python VM has no opcodes, so computation is charged in three ways:

* ``CALL`` per contract call covers dispatch, the argument checks and a bounded amount of
  constant-time work (comparisons, additions and subtractions: what a token transfer does);
* ``MATH`` per multiplication, division or modular reduction of big integers, and per bit of the
  operand of an integer square root (Newton's method needs at most that many steps);
* ``HASH`` per SHA3-256 a contract computes (address derivations: the pool address of a token pair).

Nothing outside this module names a cost: contracts call ``CallContext.charge``/``compute`` with
these constants. ``docs/protocol.md`` section 6 lists them (a test checks that it does).
"""

from __future__ import annotations

from typing import Final

TX_BASE: Final = 10_000
"""Intrinsic cost of any transaction (signature check, nonce update)."""
TX_BYTE: Final = 2
"""Per byte of the transaction's signing bytes."""
CALL: Final = 700
"""Per contract call (top-level or nested, a contract creation's ``init`` included)."""
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
LOCK: Final = 100
"""Per re-entrancy lock taken (transaction-scoped, never stored: EIP-1153 ``TSTORE`` costs 100)."""
MATH: Final = 5
"""Per big-integer multiplication, division or reduction, and per bit of a square root's operand
(Yellow Paper ``G_low`` = 5 is the cost of ``MUL`` and ``DIV``)."""
HASH: Final = 60
"""Per SHA3-256 computed by a contract (Yellow Paper ``G_sha3`` 30 + 6 per word of a 5-word input)."""

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
