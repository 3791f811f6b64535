"""End to end: idsync against OpenLDAP's own replication (syncrepl), on the same workload, one run.

Starts the real rig (a Kafka broker, a central slapd and two user-forest slapds, the rig's), loads
N users over the two user forests, then measures:
- initial sync: a syncrepl consumer slapd (refreshAndPersist, empty at start) and then idsync's
  worker (cold start: no positions, empty central forest), each until the last object is present;
- steady state: displayName modifications at fixed rates, while both follow; the latency from the
  LDAP modify returning to the value being visible, for idsync on the central contact, for the
  reference on the replicated user;
- `idsync resync` with nothing to do; the running worker putting back every contact deleted from the
  central forest (it reads the deletes); `idsync resync` after such a wipe with the worker stopped;
- the floor: the same contacts added straight to the central forest by ldap3 (1 and 4 connections);
- peak RSS and CPU seconds of every idsync process (the worker's tree and each resync).
Every "present" or "visible" is what a watcher sees: a syncrepl refreshAndPersist search on the
watched slapd (bench/e2e/watcher.py), never idsync's logs. Measurements only: nothing asserts a bound.
Read with care: the replica's watcher can attach only once the replica listens, so what the replica
fetched before arrives in the watcher's refresh at once (its "first to last" rate flatters it; its
"start to last" time is the figure); a change the replica shows before the writer's process has
read its modify's response counts as 0 ms (the table counts those; "from the modify sent" is the
other bound). Other work on the machine moves every figure: compare within one run.

Prints a table (medians where measurements repeat; ratios idsync / reference) and writes
results.json and plot.png (latency distributions, initial-sync throughput over time) to --out.
The plot needs matplotlib: `.venv/bin/pip install -c docker/constraints.txt -e '.[bench]'`
(without it the table and the JSON are still written).

    .venv/bin/python bench/end_to_end.py                                  # 10,000 users, 50/s and 500/s, 60 s
    .venv/bin/python bench/end_to_end.py --users 400 --rates 20,100 --seconds 5 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import report  # noqa: E402
from bench.e2e.idsync_side import contacts_base, run_resync, start_worker, worker_pid, write_topology  # noqa: E402
from bench.e2e.procstat import Sampler, usage  # noqa: E402
from bench.e2e.reference import SyncreplReplica  # noqa: E402
from bench.e2e.stats import latency, median, rate_over_time, sync_figures  # noqa: E402
from bench.e2e.watcher import Watcher  # noqa: E402
from bench.e2e.workload import Directory, delete_below, direct_writes, load_users, modify_at_rate  # noqa: E402
from idsync.rig import KafkaBroker, SlapdInstance  # noqa: E402

CENTRAL_SUFFIX = "dc=central,dc=idsync,dc=test"
USER_FORESTS = ("forest-a", "forest-b")
CONTACT_FILTER = "(objectClass=contact)"
USER_FILTER = "(objectClass=inetOrgPerson)"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def directory(server: SlapdInstance, people_ou: str, domain: str) -> Directory:
    return Directory(server.url, server.admin_dn, server.admin_password, people_ou, domain)


def merged(watchers: list[Watcher], attribute: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for watcher in watchers:
        # A copy (made in C, under the interpreter lock): the receiving thread keeps adding.
        for key, moment in getattr(watcher, attribute).copy().items():
            found[key] = min(moment, found.get(key, math.inf))
    return found


def initial_sync(watchers: list[Watcher], started: float, users: int, timeout: float, alive=lambda: True) -> dict:
    deadline = time.monotonic() + timeout
    while sum(len(w.first_seen) for w in watchers) < users and time.monotonic() < deadline and alive():
        time.sleep(0.05)
    arrivals = list(merged(watchers, "first_seen").values())
    figures = sync_figures(started, arrivals, users)
    return {**figures.as_dict(), "rate_over_time": rate_over_time(started, arrivals, report.bin_seconds(figures))}


def steady(args, forests, shares, idsync_watcher: Watcher, replica_watchers: list[Watcher], rate: float,
           samplers: dict[str, Sampler]) -> dict:
    label = f"r{rate:g}-{secrets.token_hex(2)}"
    cpu_before = {system: sampler.sample() for system, sampler in samplers.items()}
    writers = max(1, math.ceil(rate / 250))
    modifies = modify_at_rate(forests, shares, rate, args.seconds, label, writers)
    sent = {tag: after for tag, (_, after) in modifies.items()}
    idsync_watcher.wait(lambda w: all(tag in w.value_seen for tag in sent), args.grace)
    deadline = time.monotonic() + args.grace
    while (seen := merged(replica_watchers, "value_seen")) and time.monotonic() < deadline:
        if all(tag in seen for tag in sent):
            break
        time.sleep(0.05)
    cpu_after = {system: sampler.sample() for system, sampler in samplers.items()}
    moments = sorted(sent.values())
    result = {"sent": len(sent), "writers": writers,
              "achieved_rate": (len(moments) - 1) / (moments[-1] - moments[0]) if len(moments) > 1 else math.nan,
              "cpu_seconds": {system: cpu_after[system].cpu_seconds - cpu_before[system].cpu_seconds
                              for system in samplers if cpu_before[system] and cpu_after[system]}}
    for system, seen in (("idsync", idsync_watcher.value_seen), ("reference", merged(replica_watchers, "value_seen"))):
        summary, values = latency(sent, seen.copy())
        result[system] = summary.as_dict()
        result[f"{system}_latencies_ms"] = values
        from_sent = {tag: before for tag, (before, _) in modifies.items()}
        result[f"{system}_from_sent"] = latency(from_sent, seen.copy())[0].as_dict()
    return result


def wipe(central: SlapdInstance) -> tuple[int, float]:
    """Delete every contact below the contacts OU; (how many, the moment the deletes began)."""
    started = time.perf_counter()
    return delete_below(directory(central, contacts_base(central), ""), contacts_base(central), CONTACT_FILTER), started


def noop_resyncs(args, topology: Path, env: dict) -> dict:
    runs = [run_resync(topology, env, topology.parent / "resync.log") for _ in range(args.repeats)]
    return {"seconds": [r.seconds for r in runs], "median_s": median([r.seconds for r in runs]),
            "returncodes": [r.returncode for r in runs], "peak_rss_mb": max(r.peak_rss_mb for r in runs),
            "cpu_seconds": median([r.cpu_seconds for r in runs]), "output": runs[-1].output}


def healed_after_wipe(args, central: SlapdInstance, watcher: Watcher, users: int) -> dict:
    """With the worker running, idsync puts deleted contacts back by itself (the central forest's
    reader sees the deletes): seconds from the first delete until every contact is back."""
    deletes = watcher.deletes
    wiped, started = wipe(central)
    wiped_at = time.perf_counter()
    back = watcher.wait(lambda w: w.deletes >= deletes + wiped and len(w.present) >= users, args.grace)
    return {"wiped": wiped, "wipe_s": wiped_at - started,
            "converged_s": watcher.last_change - started if back else math.nan, "present_after": len(watcher.present)}


def resync_after_wipe(args, topology: Path, env: dict, central: SlapdInstance, watcher: Watcher, users: int) -> dict:
    """With the worker stopped: wipe, then `idsync resync`; seconds from its start until every
    contact is present again."""
    wiped, _ = wipe(central)
    watcher.wait(lambda w: not w.present, 60)
    watcher.settle(quiet=1, timeout=10)
    before = len(watcher.present)
    started = time.perf_counter()
    after = run_resync(topology, env, topology.parent / "resync.log")
    back = watcher.wait(lambda w: len(w.present) >= users, args.grace)
    converged = max(watcher.last_change, started + after.seconds) - started if back else math.nan
    return {"wiped": wiped, "present_before": before, "command_s": after.seconds, "converged_s": converged,
            "present_after": len(watcher.present), "returncode": after.returncode,
            "peak_rss_mb": after.peak_rss_mb, "cpu_seconds": after.cpu_seconds, "output": after.output}


def rig_cpu_seconds(broker: KafkaBroker, central: SlapdInstance, servers: dict[str, SlapdInstance]) -> dict[str, float]:
    """CPU seconds so far of the broker, the central and each user forest's slapd."""
    processes = {"kafka": broker.pid, "central-slapd": central.pid,
                 **{f"{name}-slapd": server.pid for name, server in servers.items()}}
    found = {name: usage(pid) if pid else None for name, pid in processes.items()}
    return {name: figures.cpu_seconds for name, figures in found.items() if figures is not None}


def floor(args, central: SlapdInstance, forests: list[Directory], shares) -> dict:
    """The same contacts (the first --floor-objects of them: central's databases, and its
    accesslog above all, have the rig's 1 GiB map each) added straight to the central forest."""
    per_forest = math.ceil(args.floor_objects / len(shares))
    shares = [range(share.start, min(share.stop, share.start + per_forest)) for share in shares]
    objects = sum(len(share) for share in shares)
    found = {}
    for connections in (1, 4):
        runs = []
        for run in range(args.repeats):
            target = directory(central, f"ou=direct-{connections}-{run},{CENTRAL_SUFFIX}", "")
            runs.append(direct_writes(target, forests, shares, connections))
        found[str(connections)] = {"objects": objects, "seconds": runs, "median_s": median(runs),
                                   "per_second": objects / median(runs)}
        say(f"direct ldap3 adds, {connections} connection(s): {found[str(connections)]['per_second']:.0f}/s")
    return found


def run(args, workdir: Path) -> dict:
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "load": {"users": args.users, "forests": len(USER_FORESTS), "rates": args.rates,
                              "seconds": args.seconds, "repeats": args.repeats}}
    with ExitStack() as stack:
        broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
        servers = {name: stack.enter_context(SlapdInstance(
            workdir, name=name, suffix=f"dc={name},dc=idsync,dc=test", admin_password=secrets.token_urlsafe(16)))
            for name in USER_FORESTS}
        central = stack.enter_context(SlapdInstance(workdir, name="central", suffix=CENTRAL_SUFFIX,
                                                    admin_password=secrets.token_urlsafe(16)))
        forests = [directory(server, f"ou=people,{server.suffix}", f"{name}.test") for name, server in servers.items()]
        started = time.perf_counter()
        shares = load_users(forests, args.users)
        say(f"rig up; {args.users} users loaded in {time.perf_counter() - started:.1f}s")

        replica = SyncreplReplica(workdir, list(servers.values()))
        stack.callback(replica.stop)
        started = time.perf_counter()
        replica.start()
        replica_watchers = []
        for n, db in enumerate(replica.databases()):
            replica_watchers.append(Watcher(db, f"ou=people,{db.suffix}", USER_FILTER, workdir / f"pw-{n}",
                                            name=f"replica-{n}"))
            stack.push(replica_watchers[-1])
            # The replica may not have fetched the people OU yet: the watcher retries until it has.
            replica_watchers[-1].start(retry_seconds=args.timeout)
        results["initial_sync"] = {"reference": initial_sync(replica_watchers, started, args.users, args.timeout)}
        say(f"reference initial sync: {report.sync_line(results['initial_sync']['reference'])}")

        topology, env = write_topology(workdir, f"e2e-{secrets.token_hex(3)}", broker, central, list(servers.values()))
        watcher = stack.enter_context(Watcher(central, contacts_base(central), CONTACT_FILTER, workdir / "pw-central",
                                              name="central"))
        watcher.refreshed.wait(5)
        # What the rig's servers spend while idsync syncs: on a small machine they share its
        # cores with the worker, so the whole machine's CPU per contact is what bounds the rate.
        servers_before = rig_cpu_seconds(broker, central, servers)
        started = time.perf_counter()
        worker = start_worker(topology, env)
        stack.callback(worker.stop)
        sampler = Sampler(worker_pid(worker))
        results["initial_sync"]["idsync"] = initial_sync([watcher], started, args.users, args.timeout,
                                                         alive=lambda: worker.running)
        sync_cpu = sampler.sample()
        servers_cpu = {name: after - servers_before[name]
                       for name, after in rig_cpu_seconds(broker, central, servers).items()}
        say(f"idsync initial sync: {report.sync_line(results['initial_sync']['idsync'])}")
        if not worker.running:
            raise RuntimeError(f"the worker exited; see {worker.log_path}")

        results["steady"] = {}
        replica_sampler = Sampler(replica.pid)
        for rate in args.rates:
            time.sleep(2)
            results["steady"][f"{rate:g}"] = steady(args, forests, shares, watcher, replica_watchers, rate,
                                                    {"idsync": sampler, "reference": replica_sampler})
            say(f"steady {rate:g}/s: {report.steady_line(results['steady'][f'{rate:g}'])}")

        results["resync"] = {"noop": noop_resyncs(args, topology, env)}
        results["resync"]["healed"] = healed_after_wipe(args, central, watcher, args.users)
        worker_usage = sampler.close()
        worker.stop()
        results["resync"]["after_wipe"] = resync_after_wipe(args, topology, env, central, watcher, args.users)
        say(f"resync: {report.resync_line(results['resync'])}")
        replica_usage = replica_sampler.close()
        results["resources"] = {
            "worker": {"peak_rss_mb": worker_usage.peak_rss_mb, "cpu_seconds": worker_usage.cpu_seconds,
                       "initial_sync_cpu_seconds": sync_cpu.cpu_seconds if sync_cpu else None},
            "servers-initial-sync": {"cpu_seconds": servers_cpu},
            "resync-noop": {k: results["resync"]["noop"][k] for k in ("peak_rss_mb", "cpu_seconds")},
            "resync-after-wipe": {k: results["resync"]["after_wipe"][k] for k in ("peak_rss_mb", "cpu_seconds")},
            "reference-slapd": {"peak_rss_mb": replica_usage.peak_rss_mb, "cpu_seconds": replica_usage.cpu_seconds}
            if replica_usage else None,
        }
        results["direct"] = floor(args, central, forests, shares)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users over the two user forests")
    parser.add_argument("--rates", type=lambda text: [float(v) for v in text.split(",")], default=[50.0, 500.0],
                        help="modifications per second, comma-separated (default 50,500)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of modifications per rate")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the no-op resync and of each direct floor")
    parser.add_argument("--floor-objects", type=int, default=10_000,
                        help="contacts per run of the direct-write floor (at most --users)")
    parser.add_argument("--grace", type=float, default=None,
                        help="seconds to wait for changes still to arrive (default 60 s + 20 ms/user)")
    parser.add_argument("--timeout", type=float, default=None, help="initial-sync limit (default 120 s + 20 ms/user)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/<UTC timestamp>/")
    args = parser.parse_args(argv)
    args.timeout = args.timeout or 120 + args.users * 0.02
    args.grace = args.grace or 60 + args.users * 0.02
    args.floor_objects = min(args.floor_objects, args.users)
    args.out = args.out or Path(__file__).parent / "results" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="idsync-e2e-") as scratch:
        try:
            results = run(args, Path(scratch))
        finally:  # the logs of idsync's processes, kept for a look at a failed or slow run
            for log in Path(scratch).glob("*.log"):
                shutil.copy(log, args.out / log.name)
    table = report.table(results)
    print("\n" + table)
    (args.out / "table.txt").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plotted = report.plot(results, args.out / "plot.png")
    print(f"\nwritten: {args.out / 'results.json'}" + (f", {plotted}" if plotted else " (no plot: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
