"""Partitions in network namespaces (needs root and ip netns): the active's cable pulled while it polls and writes a
device (stale frames after the heal, takeover), and the main-backup link black-holed (the standby's catch-up after the heal)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness import parser, report, seconds, summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import Updater  # noqa: E402
from netns import NetnsHosts  # noqa: E402
from test_partition import count_to, cut_the_active, cut_the_standby, plc_under_control, start  # noqa: E402

from webmanager.tools.launcher import NODE_NAMES, wait_for  # noqa: E402


def main() -> int:
    arguments = parser(__doc__, runs=20)
    arguments.add_argument("--cut", type=float, default=10.0, help="seconds the main-backup link stays black-holed (default 10)")
    args = arguments.parse_args()
    stale, reused, takeover, catch_up = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        directory = args.keep or Path(tmp)
        with NetnsHosts(NODE_NAMES) as net, plc_under_control(net, directory / "active") as (cluster, device):
            for _ in range(max(1, args.runs // 2)):
                outcome = cut_the_active(net, cluster, device)
                stale.append(len(outcome.stale))
                reused.append(len(outcome.reused))
                takeover.append(outcome.takeover)
        with NetnsHosts(NODE_NAMES) as net:
            cluster = start(net, directory / "standby", failback="manual")
            try:
                cluster.make_active("main")
                with Updater(cluster, count_to, period=0.05) as writer:
                    wait_for(lambda: writer.sent >= 10, 10, "writes acknowledged")
                    for _ in range(args.runs):
                        catch_up.append(cut_the_standby(net, cluster, writer, args.cut))
            finally:
                cluster.stop()
    count = lambda value: f"{value:.0f}"  # noqa: E731
    ok = report(
        "partition",
        [
            ("active's cable pulled 5 s: its stale frames after the new active's first", summary(stale), "0", count, lambda s: s["worst"] == 0),
            ("... frames on its connections from before the cut", summary(reused), "0", count, lambda s: s["worst"] == 0),
            ("... cut -> the backup's first device request", summary(takeover), "median <= 0.8 s", seconds, lambda s: s["median"] <= 0.8),
            (f"main-backup link cut {args.cut:.0f} s: heal -> backup current", summary(catch_up), "max <= 2 s", seconds, lambda s: s["worst"] <= 2.0),
        ],
        {"samples": {"stale": stale, "reused": reused, "takeover": takeover, "catch_up": catch_up}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
