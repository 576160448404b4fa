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
    """Raised by handlers (and the client) for a JSON-RPC error ``code`` with ``message`` and ``data``.

    ``http_status`` is the HTTP status the server answers with when this error is the whole response
    of a single (non-batch) HTTP request; None keeps JSON-RPC over HTTP's usual 200.
    """

    http_status: int | None = None

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


class RateLimited(RPCError):
    """Raised when a client IP is over ``[rpc] requests_per_second``: -32005 with ``data``
    ``{limit, burst, retryAfterSeconds}``; HTTP 429 with a ``Retry-After`` header (RFC 9110 §10.2.3)."""

    http_status = 429

    def __init__(self, limit: float, burst: int, retry_after: float) -> None:
        super().__init__(LIMIT_EXCEEDED, "rate limit exceeded",
                         {"limit": limit, "burst": burst, "retryAfterSeconds": round(retry_after, 3)})
        self.retry_after = retry_after


class Unauthorized(RPCError):
    """Raised when an admin method is called without the right bearer token (or, with no token
    configured, from a non-loopback address): -32000 with ``data`` "unauthorized"; HTTP 401 with
    ``WWW-Authenticate: Bearer`` (RFC 6750 §3)."""

    http_status = 401

    def __init__(self) -> None:
        super().__init__(INVALID_INPUT, "invalid input", "unauthorized")
