"""The `tandem` entry point: `run` (one node), `demo` (a whole cluster on loopback) and the client commands."""

from __future__ import annotations

import sys

from ..server import cmd_run
from .cli import build_parser, run_command
from .demo import DEMO_CONFIG, run_demo


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
