"""Developer scripts; ``scripts.netns`` runs tests and benchmarks in a loopback-only network namespace."""
