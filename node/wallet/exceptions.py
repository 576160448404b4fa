"""Errors of ``node.wallet``: each is one line the command line prints as it is."""

from __future__ import annotations

from node.exceptions import NodeError


class WalletError(NodeError):
    """Root of every error raised by ``node.wallet``; ``str(err)`` is the one-line message for the user.

    Attributes:
        exit_code: the process exit status ``qenex-wallet`` ends with (1: the node or the chain said
            no; 2: what the user gave is unusable).
    """

    exit_code: int = 1


class UsageError(WalletError):
    """Raised when an argument, a file or the password the user gave can not be used (exit status 2)."""

    exit_code = 2


class AmountError(UsageError, ValueError):
    """Raised when an amount, a slippage or a deadline does not parse or is out of range.

    Attributes:
        text: the text that was given.
    """

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"invalid amount {text!r}: {why}")
        self.text = text
        self.why = why


class NodeUnreachable(WalletError):
    """Raised when no HTTP connection to the node's JSON-RPC endpoint can be made.

    Attributes:
        url: the endpoint tried.
    """

    def __init__(self, url: str, detail: str = "") -> None:
        super().__init__(f"cannot reach node at {url}" + (f" ({detail})" if detail else ""))
        self.url = url


class RemoteError(WalletError):
    """Raised when the node answers a JSON-RPC error, or a transaction reverts.

    Attributes:
        code: the JSON-RPC error code of shared/RPC.md (3 for a revert).
        reason: the node's reason, when it gave one.
    """

    def __init__(self, message: str, code: int, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
