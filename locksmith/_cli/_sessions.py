"""``locksmith sessions list|node|info|create|renew|destroy``: Consul's session API.

One function per subcommand, each a thin layer over :class:`locksmith.Consul`'s
``sessions`` endpoints: build the request from the parsed options, print a table, detail
lines or the documented JSON, and return the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from locksmith._cli._context import ctx, read_kwargs
from locksmith._cli._exit import EXIT_NOT_FOUND, EXIT_OK, CLIError
from locksmith._cli._output import (
    meta_json,
    out,
    print_json,
    session_detail,
    session_json,
    sessions_table,
)
from locksmith._client import QueryMeta, ServiceCheck, Session

__all__ = ["cmd_create", "cmd_destroy", "cmd_info", "cmd_list", "cmd_node", "cmd_renew"]


def cmd_list(args: argparse.Namespace) -> int:
    """``sessions list``."""
    kw = read_kwargs(args)
    with ctx().consul() as consul:
        res = consul.sessions.list_with_meta(**kw)
    _print_sessions(args, res.value, res.meta)
    return EXIT_OK


def cmd_node(args: argparse.Namespace) -> int:
    """``sessions node NODE``."""
    kw = read_kwargs(args)
    with ctx().consul() as consul:
        res = consul.sessions.node_with_meta(args.node, **kw)
    _print_sessions(args, res.value, res.meta)
    return EXIT_OK


def _print_sessions(args: argparse.Namespace, sessions: Sequence[Session], meta: QueryMeta) -> None:
    if args.json:
        print_json({"sessions": [session_json(s) for s in sessions], "meta": meta_json(meta)})
    elif sessions:
        out(sessions_table(sessions))
    else:
        out("no sessions")


def cmd_info(args: argparse.Namespace) -> int:
    """``sessions info ID``: exits EXIT_NOT_FOUND when there is no such session."""
    kw = read_kwargs(args)
    with ctx().consul() as consul:
        res = consul.sessions.info_with_meta(args.session_id, **kw)
    if args.json:
        print_json(
            {
                "session": session_json(res.value) if res.value else None,
                "meta": meta_json(res.meta),
            }
        )
    elif res.value is not None:
        out(session_detail(res.value))
    if res.value is None:
        raise CLIError(f"session {args.session_id} not found", EXIT_NOT_FOUND)
    return EXIT_OK


def _split_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def cmd_create(args: argparse.Namespace) -> int:
    """``sessions create``: prints the new session's ID."""
    service_checks = None
    if args.service_checks is not None:
        service_checks = []
        for item in _split_list(args.service_checks) or []:
            cid, _, ns = item.partition("@")
            service_checks.append(ServiceCheck(id=cid, namespace=ns))
    with ctx().consul() as consul:
        sid = consul.sessions.create(
            name=args.name,
            node=args.node,
            checks=_split_list(args.checks),
            node_checks=_split_list(args.node_checks),
            service_checks=service_checks,
            lock_delay=args.lock_delay,
            behavior=args.behavior,
            ttl=args.ttl,
        )
    if args.json:
        print_json({"id": sid})
    else:
        out(sid)
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    """``sessions renew ID``: shows the session as Consul returned it."""
    with ctx().consul() as consul:
        session = consul.sessions.renew(args.session_id)
    if args.json:
        print_json({"session": session_json(session)})
    else:
        out(session_detail(session))
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    """``sessions destroy ID``: exits EXIT_NOT_FOUND when there is no such session.

    Consul answers ``true`` to destroying a session that does not exist (a typo, or one
    already gone), so the session is looked up first.
    """
    with ctx().consul() as consul:
        if consul.sessions.info(args.session_id) is None:
            if args.json:
                print_json({"id": args.session_id, "destroyed": False})
            raise CLIError(f"session {args.session_id} not found", EXIT_NOT_FOUND)
        consul.sessions.destroy(args.session_id)
    if args.json:
        print_json({"id": args.session_id, "destroyed": True})
    else:
        out(f"destroyed {args.session_id}")
    return EXIT_OK
