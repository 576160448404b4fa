"""The local multi-validator network: layout, processes, workload, benchmark, Docker files."""
