"""Cryptographic primitives of QENEX Ledger: SHA3-256, scheme-tagged signatures, addresses, keystore."""
