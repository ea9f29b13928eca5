"""Helpers shared by the lock manager's tests (proxy, child process, polling)."""
