"""The node: config, CLI, mempool, block production and execution, consensus driver, JSON-RPC."""
