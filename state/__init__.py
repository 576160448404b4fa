"""Canonical encoding, chain data types, the LevelDB store, the authenticated state tree, block store."""
