"""Validator-to-validator networking: framing, the authentication handshake, the Trio peer network.

``p2p.framing`` and ``p2p.handshake`` are sans-IO (pure, no sockets or clocks); ``p2p.network`` runs
them over TCP on Trio. ``p2p.abc.Transport`` is what the node's consensus driver types against.
"""
