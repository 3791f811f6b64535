"""The `idsync` command."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime, timezone
import asyncio
import logging
import sys
from pathlib import Path

from streams.config.topology import MetricsSettings, Topology, TopologyError, load_topology, split_listen

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "topology.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idsync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run every reader, the metaverse processor and the contact writer")
    run.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--state-dir", type=Path, metavar="DIR",
                     help="where this worker keeps its tables (default: the topology's streams.state_dir); "
                          "each worker on one machine needs its own")
    run.add_argument("--metrics-listen", type=_listen, metavar="HOST:PORT",
                     help="where this worker serves /metrics, /status and the health checks (default: the "
                          "topology's metrics.listen, its auth kept); each worker on one machine needs its own port")
    run.add_argument("--components", type=_components, default="readers,processor,sinks", metavar="LIST",
                     help="what this worker runs, comma-separated: readers (each forest's and site store's "
                          "reader, on one worker of the deployment at a time), processor (the metaverse engine, "
                          "its partitions shared by the workers), sinks (contact and site writers); default all")

    full_import = commands.add_parser(
        "import", help="publish a full snapshot of forests; the worker then deletes what no longer exists"
    )
    full_import.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    full_import.add_argument("--full", action="store_true", required=True, help="read every object in scope")
    full_import.add_argument("--forest", action="append", help="only this forest (repeatable; default: all)")
    full_import.add_argument(
        "--allow-mass-delete", action="store_true", help="let this snapshot's sweep exceed the mass-delete guard"
    )

    demo = commands.add_parser(
        "demo", help="start a local broker and directories, sync sample users, print the contacts, stop"
    )
    demo.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help="the embedded default topology")
    demo.add_argument("--workdir", type=Path, help="keep servers' files here (default: a temporary directory)")

    conflicts = commands.add_parser("conflicts", help="list the open conflicts (join ambiguities, names taken)")
    conflicts.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    conflicts.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    deletes = commands.add_parser(
        "deletes", help="list the deletes the breaker holds (--held), or approve or reject them"
    )
    deletes.add_argument("verdict", nargs="?", choices=["approve", "reject"], help="without one: list the held deletes")
    deletes.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    deletes.add_argument("--held", action="store_true", help="list the held deletes (what `deletes` alone does)")
    deletes.add_argument("--json", action="store_true", help="list as a JSON array instead of a table")
    deletes.add_argument("--person", action="append", default=[], metavar="ID",
                         help="approve or reject only this person's held delete (repeatable; default: every held one)")

    lag = commands.add_parser(
        "lag", help="consumer lag of idsync's groups per topic and partition, with a status by Burrow's rules"
    )
    lag.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    lag.add_argument("--json", action="store_true", help="JSON instead of a table (with --watch: one object a line)")
    lag.add_argument("--watch", action="store_true", help="print again after every sample until interrupted")
    lag.add_argument("--interval", type=_positive_float, metavar="S",
                     help="seconds between samples (default 1; with --watch 5)")
    lag.add_argument("--samples", type=_window_size, metavar="N",
                     help="samples the status is judged over (default 3; with --watch a sliding window of 10)")

    errors = commands.add_parser(
        "errors", help="list the error topic's dead letters (--follow: and new ones), or replay them to their topics"
    )
    errors.add_argument("action", nargs="?", choices=["replay"], help="without it: list the dead letters")
    errors.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    errors.add_argument("--stage", metavar="S", help="only this stage's: reader, metaverse or contact-writer")
    errors.add_argument("--since", metavar="T", help="only those since T: ISO 8601 (UTC unless it says), or 30m, 2h, 7d")
    errors.add_argument("--json", action="store_true", help="list as JSON (with --follow: one object a line)")
    errors.add_argument("--follow", action="store_true", help="after the list, print each new one until interrupted")
    errors.add_argument("--again", action="store_true", help="replay also those replayed before")

    resync = commands.add_parser(
        "resync",
        help="make the central forest match the metaverse again, from Kafka's compacted contact states "
        "(no source directory is read)",
    )
    resync.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    resync.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    resync.add_argument("--forest", metavar="NAME", help="only the contacts of this user forest")
    resync.add_argument("--rebuild", action="store_true",
                        help="first have the running worker derive every contact again with the rules in force "
                             "(after a change of templates, precedence or export kinds)")
    resync.add_argument("--to-datetime", metavar="T", type=_moment,
                        help="the contact states as they were at T (ISO 8601, UTC unless it says); stop the worker "
                             "first, or it puts its current ones back")

    sites = commands.add_parser("sites", help="person sync: the sites' last synchronization and members, or sync now")
    sites.add_argument("action", choices=["status", "members", "sync"],
                       help="status: per site; members SITE: its members; sync: one pass now")
    sites.add_argument("site", nargs="?", help="members: the site (store/site, or a site name one store has)")
    sites.add_argument("--topology", type=Path, required=True, help="path to topology.yaml")
    sites.add_argument("--json", action="store_true", help="JSON instead of a table")
    sites.add_argument("--full", action="store_true", help="sync: read the membership lists whole")
    sites.add_argument("--site", dest="only_site", metavar="ID", help="sync: only this site (store/site or site)")

    args = parser.parse_args(argv)
    if args.command == "sites":
        if (args.action == "members") != (args.site is not None):
            sites.error("members needs a SITE, and only members takes one")
        if args.action != "sync" and (args.full or args.only_site):
            sites.error("--full and --site go with sync")
    if args.command == "deletes" and args.verdict and (args.held or args.json):
        deletes.error(f"--held and --json list the held deletes; they do not go with {args.verdict}")
    if args.command == "deletes" and not args.verdict and args.person:
        deletes.error("--person goes with approve or reject")
    if args.command == "errors" and args.action and (args.json or args.follow):
        errors.error("--json and --follow list the dead letters; they do not go with replay")
    if args.command == "errors" and not args.action and args.again:
        errors.error("--again goes with replay")
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "run":
        from idsync.runtime import run_worker

        if args.state_dir is not None:
            topology = dataclasses.replace(
                topology, streams=dataclasses.replace(topology.streams, state_dir=args.state_dir.absolute()))
        if args.metrics_listen is not None:
            host, port = args.metrics_listen
            auth = topology.metrics.auth if topology.metrics else None
            topology = dataclasses.replace(topology, metrics=MetricsSettings(host=host, port=port, auth=auth))
        run_worker(topology, loglevel=args.log_level, components=args.components)
        return 0
    if args.command == "import":
        return _full_import(topology, args.forest, allow_mass_delete=args.allow_mass_delete)
    if args.command in ("conflicts", "deletes"):
        return asyncio.run(_operation(topology, args))
    if args.command == "lag":
        return _lag(topology, args)
    if args.command == "errors":
        return _errors(topology, args, errors)
    if args.command == "resync":
        return _resync(topology, args, resync)
    if args.command == "sites":
        return asyncio.run(_sites(topology, args))
    from idsync.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_demo(topology, workdir=args.workdir)


def _components(text: str) -> frozenset[str]:
    from idsync.runtime import COMPONENTS

    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not chosen or not chosen <= set(COMPONENTS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(COMPONENTS)}; not {text!r}")
    return chosen


def _listen(text: str) -> tuple[str, int]:
    try:
        return split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date and time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _resync(topology: Topology, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from idsync.resync import run_resync

    if args.forest and args.forest not in {forest.name for forest in topology.user_forests}:
        parser.error(f"--forest {args.forest}: not a user forest of the topology")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.rebuild and args.to_datetime:
        parser.error("--rebuild derives the contacts of now; it does not go with --to-datetime")
    return run_resync(topology, dry_run=args.dry_run, forest=args.forest, as_of=args.to_datetime, rebuild=args.rebuild)


def _full_import(topology: Topology, names: list[str] | None, *, allow_mass_delete: bool) -> int:
    from idsync.runtime import run_full_import

    try:
        forests = [topology.forest(name) for name in names] if names else list(topology.forests)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    # A snapshot needs every chosen forest: a missing password is said before anything is published.
    problems = [problem for forest in forests if (problem := forest.password.problem())]
    if problems:
        print("\n".join(f"idsync: {problem}" for problem in problems), file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for summary in asyncio.run(run_full_import(topology, forests, allow_mass_delete=allow_mass_delete)):
        print(f"full import published {summary}")
    return 0


def _lag(topology: Topology, args: argparse.Namespace) -> int:
    from idsync.lag import show_lag

    try:
        return asyncio.run(show_lag(topology, json=args.json, watch=args.watch, samples=args.samples,
                                    interval=args.interval))
    except KeyboardInterrupt:
        return 0 if args.watch else 130


def _errors(topology: Topology, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from idsync import errors

    try:
        since = errors.parse_since(args.since, datetime.now(timezone.utc)) if args.since else None
    except ValueError as exc:
        parser.error(f"--since: {exc}")
    try:
        if args.action == "replay":
            return asyncio.run(errors.replay_errors(topology, stage=args.stage, since=since, again=args.again))
        return asyncio.run(errors.list_errors(topology, json=args.json, follow=args.follow, stage=args.stage,
                                              since=since))
    except KeyboardInterrupt:
        return 0 if args.follow else 130


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _window_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"the rules compare samples: at least 2, not {text}")
    return value


async def _operation(topology: Topology, args: argparse.Namespace) -> int:
    from idsync import operations

    if args.command == "conflicts":
        return await operations.list_conflicts(topology, json=args.json)
    if args.verdict is None:
        return await operations.list_held_deletes(topology, json=args.json)
    return await operations.decide_held_deletes(topology, approve=args.verdict == "approve", persons=args.person)


async def _sites(topology: Topology, args: argparse.Namespace) -> int:
    from idsync import sites

    if topology.sites is None:
        print(f"{topology.source}: has no sites section: person sync is not configured", file=sys.stderr)
        return 2
    if args.action == "status":
        return await sites.show_status(topology, json=args.json)
    if args.action == "members":
        return await sites.show_members(topology, args.site, json=args.json)
    return await sites.sync_now(topology, site=args.only_site, full=args.full, json=args.json)


if __name__ == "__main__":
    sys.exit(main())
