"""Benchmarks: each module has ``run(quick: bool) -> dict``; ``python -m benchmarks`` runs them."""
