"""Command line for the test harness.

Usage:
    python -m locksmith.testing fetch      # resolve/fetch consul, print its path (downloads
                                           # even with LOCKSMITH_CONSUL_DOWNLOAD=0: explicit)
    python -m locksmith.testing agent      # run a dev agent until Ctrl-C, print its address
    python -m locksmith.testing cluster    # run the 3-server cluster until Ctrl-C
    python -m locksmith.testing docker     # tell whether a Docker engine answers
"""

from __future__ import annotations

import argparse
import sys
import time

from ._agent import ConsulAgent, ConsulStartError
from ._binary import ConsulNotFoundError, consul_version, find_consul
from ._cluster import ConsulCluster
from ._docker import docker_available


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m locksmith.testing", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser("fetch", help="resolve (download if needed) consul; print its path")
    fetch.add_argument("--version", action="store_true", help="also print `consul version`")
    agent = sub.add_parser("agent", help="run a dev agent until interrupted")
    agent.add_argument("--node", default="locksmith-manual")
    cluster = sub.add_parser("cluster", help="run a 3-server cluster until interrupted")
    cluster.add_argument("--raft-multiplier", type=int, default=1)
    sub.add_parser("docker", help="check whether a Docker engine answers")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "fetch":
            path = find_consul(download=True)
            _out(str(path))
            if args.version:
                _out(consul_version(path))
        elif args.cmd == "agent":
            with ConsulAgent(node_name=args.node) as running:
                _out(f"CONSUL_HTTP_ADDR={running.http_addr}  (log: {running.log_path})")
                _wait_forever()
        elif args.cmd == "cluster":
            with ConsulCluster(raft_multiplier=args.raft_multiplier) as servers:
                _out(f"servers: {' '.join(servers.http_addrs)}; leader: {servers.leader()}")
                _wait_forever()
        else:
            ok, why = docker_available()
            _out(f"{'yes' if ok else 'no'}: {why}")
            return 0 if ok else 1
    except (ConsulNotFoundError, ConsulStartError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
