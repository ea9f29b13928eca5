"""``locksmith leader KEY [--watch]``: who leads an election, and with ``--watch`` every change.

Reads through a :class:`~locksmith.LockManager`'s election (it never campaigns); the JSON and
text forms come from :mod:`locksmith._cli._output`.
"""

from __future__ import annotations

import argparse
import json
import sys

from locksmith._cli._context import ctx
from locksmith._cli._exit import EXIT_NOT_FOUND, EXIT_OK
from locksmith._cli._output import leader_json, leader_text, out, print_json

__all__ = ["cmd_leader"]


def cmd_leader(args: argparse.Namespace) -> int:
    """``leader KEY``: exits EXIT_NOT_FOUND when nobody leads (``--watch``: 0 on Ctrl-C)."""
    from locksmith._manager import LockManager  # noqa: PLC0415

    consul = ctx().consul()
    mgr = LockManager(consul, name="locksmith leader")
    try:
        election = mgr.election(args.key)
        if not args.watch:
            info = election.leader()
            if args.json:
                print_json(leader_json(election.key, info))
            else:
                out(leader_text(election.key, info))
            return EXIT_OK if info is not None else EXIT_NOT_FOUND
        try:
            for info in election.observe():
                if args.json:
                    out(json.dumps(leader_json(election.key, info)))
                else:
                    out(leader_text(election.key, info))
                sys.stdout.flush()
        except KeyboardInterrupt:
            return EXIT_OK
        return EXIT_OK
    finally:
        mgr.close()
        consul.close()
