"""The `idsync` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from streams.topology import TopologyError, load_topology

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "topology.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idsync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run every reader, the metaverse processor and the contact writer")
    run.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    demo = commands.add_parser(
        "demo", help="start a local broker and directories, sync sample users, print the contacts, stop"
    )
    demo.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help="the embedded default topology")
    demo.add_argument("--workdir", type=Path, help="keep servers' files here (default: a temporary directory)")

    args = parser.parse_args(argv)
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "run":
        from idsync.runtime import run_worker

        run_worker(topology, loglevel=args.log_level)
        return 0
    from idsync.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_demo(topology, workdir=args.workdir)


if __name__ == "__main__":
    sys.exit(main())
