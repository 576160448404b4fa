"""JSON-RPC error codes of shared/RPC.md and the exception that carries them."""

from __future__ import annotations

from typing import Any, Final

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
INVALID_INPUT: Final = -32000
NOT_FOUND: Final = -32001
TX_REJECTED: Final = -32003
LIMIT_EXCEEDED: Final = -32005
EXECUTION_REVERTED: Final = 3


class RPCError(Exception):
    """Raised by handlers (and the client) for a JSON-RPC error ``code`` with ``message`` and ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err
