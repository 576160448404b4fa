"""JSON-RPC 2.0 (shared/RPC.md): the server on hypercorn/Trio and the Python client."""
