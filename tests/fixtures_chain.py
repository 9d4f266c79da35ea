"""Chain fixtures (anvil process, eth-tester and anvil backends)."""
