"""Composition root and `tandem` entry point: wires the cluster node and the web app; client commands come from cluster.cli."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from cluster.cli import build_parser, run_command
from cluster.config import TandemConfig
from cluster.journal import JournalCorrupt
from cluster.node import ClusterNode
from cluster.raft import RaftError

from .api import create_app
from .demo import DEMO_CONFIG, run_demo

logger = logging.getLogger(__name__)


def cmd_run(config: TandemConfig, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format=f"%(asctime)s {args.node} %(levelname)s %(name)s: %(message)s",
    )
    node = ClusterNode(config, args.node)
    try:
        node.start()
    except (JournalCorrupt, RaftError) as exc:
        print(f"tandem run: {args.node} refuses to start: {exc}", file=sys.stderr)
        return 2
    host, port = node.me.api.rsplit(":", 1)
    try:
        web.run_app(create_app(node), host=host, port=int(port), print=None, access_log=None, handle_signals=True)
    except OSError as exc:
        print(f"tandem run: cannot serve the API on {node.me.api}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, add = build_parser()
    run = add("run", cmd_run, "run one node of the cluster (main, backup or witness)")
    run.add_argument("--node", required=True, help="this node's name in [[cluster.nodes]]")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo = add("demo", run_demo, "start main, backup and witness on loopback with a fresh data dir")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    demo.set_defaults(config=str(DEMO_CONFIG))
    args = parser.parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
