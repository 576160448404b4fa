"""The deterministic contract VM, its built-in contracts and transaction execution."""
