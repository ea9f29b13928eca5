"""Fault-injection suite: a seeded scenario runner, invariants, holder processes, bad input."""
