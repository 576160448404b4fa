"""Validator-to-validator networking: framing, the handshake, the sealed session, limits, the peer network.

``p2p.framing`` (length-prefixed frames), ``p2p.handshake`` (mutual authentication and hybrid X25519 +
ML-KEM-768 key agreement), ``p2p.session`` (ChaCha20-Poly1305 frames with counter nonces and rekeying)
and ``p2p.limits`` (rate, attempt and score bookkeeping) are sans-IO (pure, no sockets or clocks);
``p2p.network`` runs them over TCP on Trio. ``p2p.abc.Transport`` is what the node's consensus driver
types against.
"""
