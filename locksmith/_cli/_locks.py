"""``locksmith locks [PREFIX]``: who holds which lock.

Reads the keys under PREFIX and the sessions holding them, and prints the rows built by
:func:`locksmith._cli._output.lock_rows` as a table or as the documented JSON.
"""

from __future__ import annotations

import argparse

from locksmith._cli._context import ctx, read_kwargs
from locksmith._cli._exit import EXIT_OK
from locksmith._cli._output import lock_rows, lock_state_text, meta_json, out, print_json, table
from locksmith._client import Session

__all__ = ["cmd_locks"]


def cmd_locks(args: argparse.Namespace) -> int:
    """``locks [PREFIX]``."""
    kw = read_kwargs(args)
    with ctx().consul() as consul:
        res = consul.kv.list_with_meta(args.prefix, **kw)
        held = {e.session for e in res.value if e.session}
        sessions: dict[str, Session] = {}
        if held:
            sessions = {
                s.id: s for s in consul.sessions.list(consistency=kw["consistency"]) if s.id in held
            }
    rows = lock_rows(res.value, sessions)
    if args.json:
        print_json({"locks": rows, "meta": meta_json(res.meta)})
        return EXIT_OK
    if not rows:
        out(f"no locks under {args.prefix!r}" if args.prefix else "no locks")
        return EXIT_OK
    cells = [
        [
            r["key"],
            r["kind"],
            lock_state_text(r),
            r["session"] or "-",
            r["session_name"] or "-",
            r["node"] or "-",
            str(r["lock_index"]),
            str(r["fencing_token"]) if r["fencing_token"] is not None else "-",
        ]
        for r in rows
    ]
    out(table(["KEY", "KIND", "STATE", "SESSION", "NAME", "NODE", "LOCK-INDEX", "FENCING"], cells))
    return EXIT_OK
