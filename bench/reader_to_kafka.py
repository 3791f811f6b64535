"""Change-to-Kafka figures of every reader mode, each run through the real SourceRunner (issue #3).

The bench starts its own Kafka broker, then for each mode a server of the rig: a slapd per mode
and run for accesslog-sync, accesslog-poll and generic-poll (a fresh accesslog each time, so no
mode pays for another's log), one Samba DC for ad-dirsync and ad-usn-poll (provisioning is the
slow part, so it is done once). Each mode gets topics and a forest name of its own. Per mode:
- latency: the runner (reader -> ChangePublisher, acks=all -> PositionStore) runs past its
  snapshot and the first poll after it; a thread writes modifies at a steady rate (the first
  second of them a warm-up, not counted); a change's latency is from just before
  its modify was sent until a consumer of the changes topic, in a process of its own, received it;
- backlog: the runner is stopped, N modifies are written as fast as one connection goes (that
  write rate is the reference), then a new runner resumes from the stored position; the figure
  is N over the time from the runner's start (its position load and bind included, printed as
  "first after") until the consumer received all N; "sustained" is the rate from the first
  arrival to the last, the runner's start left out;
- the directory alone: afterwards, a bare client makes the query the mode's reader makes for the
  backlog and only receives the messages (no decoding, nothing published); N over its time is
  the reference for "readers are never the bottleneck": read/directory near 1 means the
  directory, not the reader, bounds the rate.
Every modify writes a unique value to `description` on a different user of a pool, so the
polling modes, which publish an object's latest state, have nothing to collapse; only what
arrives is counted all the same, and each line says how many of the sent changes arrived.
Prints each run, the medians over runs and the issue's targets. Nothing here asserts them.

    .venv/bin/python bench/reader_to_kafka.py [--runs 3] [--modes accesslog-sync,ad-dirsync ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import queue
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import ldap3
from aiokafka import AIOKafkaConsumer
from ldap3.operation.search import search_operation
from ldap3.protocol.microsoft import dir_sync_control, show_deleted_control
from ldap3.protocol.rfc2696 import paged_search_control
from ldap3.utils.asn1 import decode_message_fast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.ad.dirsync import DIRSYNC_OID  # noqa: E402
from connectors.ad.values import escape_rdn_value  # noqa: E402
from connectors.ldap.scope import RECORD_ATTRIBUTES  # noqa: E402
from connectors.ldap.session import decode_entries_fast  # noqa: E402
from connectors.ldap.wire import protocol_op_tag  # noqa: E402
from idsync.rig import KafkaBroker, SlapdInstance  # noqa: E402
from idsync.rig.forests import reader_forest  # noqa: E402
from idsync.rig.samba import SambaDC, claim_loopback_address  # noqa: E402
from idsync.kafka_clients import producer_for  # noqa: E402
from idsync.runtime import make_reader  # noqa: E402
from idsync.sample_data import ensure_ou  # noqa: E402
from streams.config.forests import Forest  # noqa: E402
from streams.config.topology import KafkaSettings, Topics  # noqa: E402
from streams.events import DirectoryChange, SnapshotMarker, SnapshotPhase, parse  # noqa: E402
from streams.kafka.positions import PositionStore  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402
from streams.processors.source_runner import SourceRunner  # noqa: E402

SLAPD_MODES = ("accesslog-sync", "accesslog-poll", "generic-poll")
# ad-dirsync+notify: ad-dirsync woken by the DC's change notifications, its poll only a safety net.
NOTIFY_MODE = "ad-dirsync+notify"
NOTIFY_POLL_SECONDS = 5.0
AD_MODES = ("ad-dirsync", "ad-usn-poll", NOTIFY_MODE)
# Every mode but the push reader polls. DirSync woken by change notifications is still DirSync
# polling (the AD reader is DirSync with a poll interval): it is held to its own poll's
# target, and compared with ad-dirsync's 0.1 s poll in the README.
POLLING_MODES = {"accesslog-poll", "generic-poll", "ad-dirsync", "ad-usn-poll", NOTIFY_MODE}
TARGET_RATE = 5000.0  # changes/s from a backlog
TARGET_PUSH_P99_MS = 50.0  # polling modes: poll interval + this
AD_USER_CLASSES = ["top", "person", "organizationalPerson", "user"]
SEARCH_RESULT_ENTRY_TAG = 0x64
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"


@dataclass
class ModeResult:
    p50_ms: float
    p99_ms: float
    live_received: int
    live_sent: int
    read_rate: float
    write_rate: float
    backlog_received: int
    backlog_sent: int
    first_event_ms: float
    # From the first backlog change to arrive to the last: the rate once the runner is going,
    # without its start (position load, bind, first search).
    sustained_rate: float
    # The backlog as a bare client gets it from the directory (see fetch_alone).
    directory_rate: float

    @property
    def share(self) -> float:
        """The reader's backlog rate over the directory's own: near 1, the directory bounds it."""
        return self.read_rate / self.directory_rate

    @property
    def ratio(self) -> float:
        return self.read_rate / self.write_rate


@dataclass
class Directory:
    """A server of the rig as the bench writes to it: the base a reader watches and the users below it."""

    server: SlapdInstance | SambaDC
    base_dn: str
    users: list[str] = field(default_factory=list)


# --- the changes topic, watched from a process of its own -------------------------------------


class ChangeWatcher:
    """Consumes the changes topic in a process of its own, so that decoding what arrives does not
    compete with the runner under measurement for this process's interpreter lock (a watcher
    thread here took CPU from the runner: 2,546 vs 2,914 changes/s in one pair of runs). Arrival times are CLOCK_MONOTONIC, which
    every process of the machine shares."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.seen_at: dict[str, float] = {}
        self.snapshots_ended = 0
        # When the last change of any kind arrived (CLOCK_MONOTONIC).
        self.last_change_at = time.monotonic()
        context = multiprocessing.get_context("spawn")
        self._arrivals = context.Queue()
        self._stopping = context.Event()
        self._process = context.Process(
            target=_watch, args=(bootstrap_servers, topic, self._arrivals, self._stopping),
            name=f"watch-{topic}", daemon=True,
        )

    def __enter__(self) -> ChangeWatcher:
        self._process.start()
        if self._arrivals.get(timeout=60) != "ready":
            raise RuntimeError("the watcher did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()

    def check(self) -> None:
        """Take in what the watcher reported; fail if it failed."""
        while True:
            try:
                report = self._arrivals.get_nowait()
            except queue.Empty:
                break
            if isinstance(report, str):
                raise RuntimeError(f"the watcher failed: {report}")
            ended, changes, arrivals = report
            self.snapshots_ended += ended
            if changes:
                self.last_change_at = time.monotonic()
            for tag, received_at in arrivals:
                self.seen_at.setdefault(tag, received_at)
        if not self._process.is_alive():
            raise RuntimeError(f"the watcher exited with {self._process.exitcode}")


def _watch(bootstrap_servers: str, topic: str, arrivals: multiprocessing.Queue, stopping: ProcessEvent) -> None:
    """In the watcher's process: report (snapshots ended, changes, [(tag, arrival time)]) per poll."""
    try:
        asyncio.run(_consume(bootstrap_servers, topic, arrivals, stopping))
    except BaseException as exc:  # reported to the bench by check()
        arrivals.put(f"{type(exc).__name__}: {exc}")


async def _consume(bootstrap_servers: str, topic: str, arrivals: multiprocessing.Queue, stopping: ProcessEvent) -> None:
    # No group: the consumer takes every partition itself, from the start of the fresh topic.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        arrivals.put("ready")
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            received_at = time.monotonic()
            ended, changes, seen = 0, 0, []
            for records in batches.values():
                for record in records:
                    data = parse(record.value)
                    if data.get("schema") == SnapshotMarker.SCHEMA:
                        ended += SnapshotMarker.from_dict(data).phase is SnapshotPhase.END
                    elif data.get("schema") == DirectoryChange.SCHEMA:
                        changes += 1
                        tag = tag_of(DirectoryChange.from_dict(data))
                        if tag is not None:
                            seen.append((tag, received_at))
            if ended or changes:
                arrivals.put((ended, changes, seen))
    finally:
        await consumer.stop()


def tag_of(change: DirectoryChange) -> str | None:
    """The description value a bench modify wrote: a value delta (accesslog, DirSync) or the
    object's latest state (the polling readers that publish states)."""
    for modification in change.modifications:
        if modification.attribute.lower() == "description" and modification.values:
            return modification.values[0]
    for name, values in change.attributes.items():
        if name.lower() == "description" and values:
            return values[0]
    return None


async def wait_until(condition: Callable[[], bool], timeout: float, watcher: ChangeWatcher) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        watcher.check()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def wait_for_tags(watcher: ChangeWatcher, tags: list[str], timeout: float, quiet: float = 10.0) -> None:
    """Until every tag arrived, or nothing new arrived for `quiet` seconds (the caller counts)."""
    deadline = time.monotonic() + timeout
    last_count, last_change = -1, time.monotonic()
    while True:
        watcher.check()
        count = sum(1 for tag in tags if tag in watcher.seen_at)
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        if count == len(tags) or now > deadline or now - last_change > quiet:
            return
        await asyncio.sleep(0.01)


# --- the runner, as idsync.runtime.run_reader runs it ------------------------------------------


@contextlib.asynccontextmanager
async def running_reader(forest: Forest, kafka: KafkaSettings) -> AsyncIterator[None]:
    """A SourceRunner with the worker's producer settings; cancelled on leaving the block."""
    producer = producer_for(kafka)
    reader = make_reader(forest)
    await producer.start()
    try:
        positions = PositionStore(producer, kafka=kafka, topic=kafka.topics.positions)
        runner = SourceRunner(reader, producer=producer, positions=positions, topics=kafka.topics, kinds=forest.object_kinds)
        running = asyncio.create_task(runner.run())
        try:
            yield
            if running.done():
                running.result()  # a runner that died must not pass for a slow one
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    finally:
        await reader.close()
        await producer.stop()


def topic_prefix(run: int, mode: str) -> str:
    return f"bench-{run}-{mode.replace('+', '-')}"


def reader_capture(mode: str, poll_interval: float) -> dict[str, object]:
    """reader_forest's mode and change-capture settings for a bench mode."""
    if mode == NOTIFY_MODE:
        return {"mode": "ad-dirsync", "poll_interval_seconds": NOTIFY_POLL_SECONDS, "wake_on_change_notification": True}
    return {"mode": mode, "poll_interval_seconds": poll_interval}


async def declare_topics(broker: KafkaBroker, runs: int, modes: list[str]) -> None:
    """Every topic of the bench, up front: a consumer that starts right after its topic was
    created can meet partitions whose leader is not loaded yet, and logs errors while it retries."""
    for run in range(1, runs + 1):
        for mode in modes:
            await ensure_topics(kafka_settings(broker, topic_prefix(run, mode)))


def kafka_settings(broker: KafkaBroker, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, client_id=prefix, partitions=3, replication_factor=1,
        topics=Topics(**{name: f"{prefix}.{name}" for name in ("changes", "positions", "contacts", "errors")}),
    )


# --- writing ---------------------------------------------------------------------------------


def write(directory: Directory, tags: list[str], rate: float | None, sent_at: dict[str, float]) -> float:
    """One modify per tag, each on the next user of the pool; returns the seconds it took."""
    with directory.server.admin_connection(raise_exceptions=True) as connection:
        start = time.monotonic()
        for n, tag in enumerate(tags):
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent_at[tag] = time.monotonic()
            user = directory.users[n % len(directory.users)]
            connection.modify(user, {"description": [(ldap3.MODIFY_REPLACE, [tag])]})
        return time.monotonic() - start


def add_slapd_users(instance: SlapdInstance, count: int) -> Directory:
    directory = Directory(instance, f"ou=people,{instance.suffix}")
    with instance.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, directory.base_dn)
        for n in range(count):
            dn = f"uid=bench{n},{directory.base_dn}"
            connection.add(dn, ["inetOrgPerson"], {"uid": f"bench{n}", "cn": f"bench{n}", "sn": "bench"})
            directory.users.append(dn)
    return directory


def add_ad_users(dc: SambaDC, count: int) -> Directory:
    directory = Directory(dc, f"OU=bench,{dc.base_dn}")
    with dc.admin_connection(raise_exceptions=True) as connection:
        connection.add(directory.base_dn, ["top", "organizationalUnit"])
        for n in range(count):
            dn = f"CN={escape_rdn_value(f'bench{n}')},{directory.base_dn}"
            connection.add(dn, AD_USER_CLASSES, {"sAMAccountName": f"bench{n}"})
            directory.users.append(dn)
    return directory


# --- the directory alone: what a reader's backlog rate is held against ----------------------


def backlog_mark(mode: str, directory: Directory) -> str | bytes | int:
    """Where the directory stands before the backlog is written, as the mode's server counts:
    the suffix's contextCSN (slapd), a DirSync cookie, the highestCommittedUSN (Samba)."""
    with bare_connection(directory.server) as connection:
        if mode in SLAPD_MODES:
            connection.search(directory.server.suffix, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"])
            return max(value.decode() for value in connection.response[0]["raw_attributes"]["contextCSN"])
        if mode == "ad-usn-poll":
            connection.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["highestCommittedUSN"])
            return int(connection.response[0]["raw_attributes"]["highestCommittedUSN"][0])
        cookie, more = b"", True
        while more:
            connection.search(directory.server.base_dn, "(objectClass=*)", attributes=["1.1"], controls=[dirsync(cookie)])
            control = connection.result["controls"][DIRSYNC_OID]["value"]
            cookie, more = control["cookie"], control["more_results"]
        return cookie


def fetch_alone(mode: str, directory: Directory, mark: str | bytes | int) -> tuple[int, float]:
    """(entries, seconds) for a bare client to get the backlog with the query the mode's reader
    makes: received and framed, not decoded (the reader's work left out), on a connection
    already bound. The directory's caches are warm from the reader's read: if anything, this
    flatters the directory."""
    server = directory.server
    with bare_connection(server) as connection:
        start = time.monotonic()
        if mode in ("accesslog-sync", "accesslog-poll"):
            # Unpaged: the sync refresh sends the records in one go; a polling read pages them.
            count = search_alone(
                connection, "cn=accesslog",
                f"(&(objectClass=auditWriteObject)(reqResult=0)(entryCSN>={mark}))", RECORD_ATTRIBUTES,
            )
        elif mode == "generic-poll":
            count = search_alone(connection, directory.base_dn, f"(entryCSN>={mark})", ["*", "entryUUID", "entryCSN"])
        elif mode == "ad-usn-poll":
            window = f"(uSNChanged>={int(mark) + 1})"
            count = search_alone(
                connection, server.base_dn, f"(&(objectClass=*){window})",
                ["*", "uSNChanged", "replPropertyMetaData"], page_size=500,
            ) + search_alone(
                connection, f"CN=Deleted Objects,{server.base_dn}", f"(&(isDeleted=TRUE){window})",
                ["*", "uSNChanged", "replPropertyMetaData"], page_size=500,
                controls=[show_deleted_control(criticality=True)], scope=ldap3.LEVEL,
            )
        else:
            count = search_alone(connection, server.base_dn, "(objectClass=*)", ["*"], controls=[dirsync(mark)])
        return count, time.monotonic() - start


@contextlib.contextmanager
def bare_connection(server: SlapdInstance | SambaDC) -> Iterator[ldap3.Connection]:
    """Bound as the admin, as idsync's sessions connect: without the schema (ldap3 checks the
    attributes asked for against it, and Samba's lacks the operational ones)."""
    connection = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE), server.admin_dn, server.admin_password,
        raise_exceptions=True, auto_bind=True,
    )
    decode_entries_fast(connection)
    try:
        yield connection
    finally:
        connection.unbind()


def search_alone(
    connection: ldap3.Connection, base: str, search_filter: str, attributes: list[str], *,
    page_size: int | None = None, controls: list | None = None, scope: str = ldap3.SUBTREE,
) -> int:
    """How many entries a search returns, its messages received but only its results decoded."""
    count, cookie = 0, b""
    while True:
        request = search_operation(
            base, search_filter, scope, ldap3.DEREF_NEVER, attributes, 0, 0, False, True, True, None,
            validator=None, check_names=False,
        )
        paging = [paged_search_control(False, page_size, cookie)] if page_size else []
        message_id = connection.send("searchRequest", request, (controls or []) + paging)
        done = None
        while done is None:
            for message in connection.strategy.receiving():
                if protocol_op_tag(message) == SEARCH_RESULT_ENTRY_TAG:
                    count += 1
                else:
                    done = connection.strategy.decode_response_fast(decode_message_fast(message))
        connection.strategy._outstanding.pop(message_id, None)  # answered, outside ldap3's bookkeeping
        if done["result"] != 0:
            raise RuntimeError(f"search of {base} failed: {done['description']} {done['message']}")
        cookie = (done.get("controls") or {}).get(PAGED_RESULTS_OID, {}).get("value", {}).get("cookie")
        if not page_size or not cookie:
            return count


def dirsync(cookie: bytes) -> tuple:
    return dir_sync_control(
        criticality=True, object_security=False, ancestors_first=True, public_data_only=True,
        incremental_values=True, max_length=2**31 - 1, cookie=cookie,
    )


# --- one mode --------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure_latency(directory: Directory, watcher: ChangeWatcher, tags: list[str], rate: float) -> list[float]:
    """Latencies of the tags after the first second's (a warm-up: the writer's first modifies
    after the pool was added wait on the directory itself, hundreds of ms at times)."""
    sent_at: dict[str, float] = {}
    writer = asyncio.create_task(asyncio.to_thread(write, directory, tags, rate, sent_at))
    try:
        await writer
        await wait_for_tags(watcher, tags, timeout=60, quiet=5)
    finally:
        if not writer.done():
            await asyncio.wait([writer])
    warm_up = round(rate)
    return [(watcher.seen_at[tag] - sent_at[tag]) * 1000 for tag in tags[warm_up:] if tag in watcher.seen_at]


async def measure_mode(mode: str, directory: Directory, broker: KafkaBroker, workdir: Path, run: int, args: argparse.Namespace) -> ModeResult:
    name = topic_prefix(run, mode)
    kafka = kafka_settings(broker, name)
    forest = reader_forest(
        directory.server, directory.base_dn, workdir / f"{name}.password", name=name,
        **reader_capture(mode, args.poll_interval),
    )
    live = [f"{name}-live-{n}" for n in range(round(args.rate * (args.seconds + 1)))]
    backlog_size = args.backlog if mode in SLAPD_MODES else args.ad_backlog
    backlog = [f"{name}-backlog-{n}" for n in range(backlog_size)]
    with ChangeWatcher(broker.bootstrap_servers, kafka.topics.changes) as watcher:
        async with running_reader(forest, kafka):
            # Latency is measured in the steady state: past the snapshot, and past the first poll
            # after it, which re-reads the overlap window before the snapshot (the polling modes;
            # here that holds the pool's users, just added).
            if not await wait_until(lambda: watcher.snapshots_ended >= 1, timeout=120, watcher=watcher):
                raise TimeoutError(f"{mode}: no snapshot published")
            await wait_until(lambda: time.monotonic() - watcher.last_change_at > 1.0, timeout=60, watcher=watcher)
            latencies = await measure_latency(directory, watcher, live, args.rate)
        mark = await asyncio.to_thread(backlog_mark, mode, directory)
        write_seconds = await asyncio.to_thread(write, directory, backlog, None, {})
        started = time.monotonic()
        async with running_reader(forest, kafka):
            await wait_for_tags(watcher, backlog, timeout=300)
    fetched, directory_seconds = await asyncio.to_thread(fetch_alone, mode, directory, mark)
    if fetched < len(backlog):
        raise RuntimeError(f"{mode}: the directory alone returned {fetched} of {len(backlog)} backlog changes")
    arrivals = [watcher.seen_at[tag] for tag in backlog if tag in watcher.seen_at]
    if not latencies or not arrivals:
        raise RuntimeError(f"{mode}: no bench change arrived in Kafka")
    return ModeResult(
        p50_ms=statistics.median(latencies), p99_ms=percentile(latencies, 0.99),
        live_received=len(latencies), live_sent=len(live) - round(args.rate),
        read_rate=len(arrivals) / (max(arrivals) - started), write_rate=len(backlog) / write_seconds,
        backlog_received=len(arrivals), backlog_sent=len(backlog), first_event_ms=(min(arrivals) - started) * 1000,
        sustained_rate=(len(arrivals) - 1) / max(max(arrivals) - min(arrivals), 1e-3),
        directory_rate=len(backlog) / directory_seconds,
    )


def latency_target_ms(mode: str, poll_interval: float) -> float:
    if mode not in POLLING_MODES:
        return TARGET_PUSH_P99_MS
    return TARGET_PUSH_P99_MS + float(reader_capture(mode, poll_interval)["poll_interval_seconds"]) * 1000


def report(label: str, mode: str, result: ModeResult, poll_interval: float) -> None:
    print(
        f"{label:7s} {mode:17s} p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms "
        f"(target < {latency_target_ms(mode, poll_interval):.0f}; {result.live_received}/{result.live_sent} arrived)  "
        f"backlog {result.read_rate:6.0f} changes/s (target >= {TARGET_RATE:.0f}; "
        f"{result.backlog_received}/{result.backlog_sent} arrived, first after {result.first_event_ms:.0f} ms; "
        f"sustained {result.sustained_rate:6.0f}/s)  "
        f"write {result.write_rate:5.0f}/s  read/write {result.ratio:5.2f}  "
        f"directory alone {result.directory_rate:6.0f}/s  read/directory {result.share:4.2f}",
        flush=True,
    )


# --- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def samba_dc(workdir: Path) -> Iterator[SambaDC]:
    """One provisioned and started DC on a claimed loopback address; stopped and released on exit."""
    claim = claim_loopback_address()
    # Samba's default policy wants upper and lower case letters, a digit and a symbol.
    dc = SambaDC(workdir, realm="BENCH.IDSYNC.TEST", domain="BENCH", host_ip=claim.address,
                 admin_password="Aa1-" + secrets.token_urlsafe(16))
    try:
        dc.start()  # provisions first; from the main thread, whose death the DC's children follow
        yield dc
    finally:
        dc.stop()
        claim.release()


async def slapd_mode(mode: str, broker: KafkaBroker, workdir: Path, run: int, args: argparse.Namespace) -> ModeResult:
    """A slapd of the mode's own, so every mode starts from an accesslog of the same size."""
    home = workdir / f"slapd-{run}-{mode}"
    instance = SlapdInstance(home, name="bench", suffix="dc=bench,dc=idsync,dc=test", admin_password=secrets.token_urlsafe(16))
    with instance:
        directory = add_slapd_users(instance, max(args.backlog, 1))
        return await measure_mode(mode, directory, broker, workdir, run, args)


async def main(args: argparse.Namespace) -> None:
    modes = args.modes
    print(
        f"{args.runs} runs; modes {', '.join(modes)}; latency: {args.rate:g} modifies/s for {args.seconds:g} s; "
        f"backlog: {args.backlog} modifies (slapd), {args.ad_backlog} (Samba); poll interval {args.poll_interval:g} s",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="idsync-bench-kafka-"))
    results: dict[str, list[ModeResult]] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as servers:
        broker = servers.enter_context(KafkaBroker(workdir / "kafka"))
        await declare_topics(broker, args.runs, modes)
        ad_directory = None
        if any(mode in AD_MODES for mode in modes):
            dc = servers.enter_context(samba_dc(workdir / "samba"))
            # One pool for both AD modes and every run: adds are slow on Samba, modifies are not.
            ad_directory = await asyncio.to_thread(add_ad_users, dc, max(args.ad_backlog, 1))
        for run in range(1, args.runs + 1):
            for mode in modes:
                if mode in AD_MODES:
                    result = await measure_mode(mode, ad_directory, broker, workdir, run, args)
                else:
                    result = await slapd_mode(mode, broker, workdir, run, args)
                results[mode].append(result)
                report(f"run {run}", mode, result, args.poll_interval)
    print_medians(results, args.poll_interval)


def print_medians(results: dict[str, list[ModeResult]], poll_interval: float) -> None:
    print(f"\nmedians over {max(len(r) for r in results.values())} runs "
          f"(targets: backlog >= {TARGET_RATE:.0f} changes/s; p99 < 50 ms push, < poll interval + 50 ms polling)")
    print(f"{'mode':17s} {'p50 ms':>7s} {'p99 ms':>7s} {'p99 target':>10s} {'backlog/s':>9s} {'sustained/s':>11s} "
          f"{'write/s':>8s} {'read/write':>10s} {'directory/s':>11s} {'read/directory':>14s}")
    for mode, runs in results.items():
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        rate = statistics.median(r.read_rate for r in runs)
        sustained = statistics.median(r.sustained_rate for r in runs)
        write_rate = statistics.median(r.write_rate for r in runs)
        ratio = statistics.median(r.ratio for r in runs)
        directory = statistics.median(r.directory_rate for r in runs)
        share = statistics.median(r.share for r in runs)
        target = f"< {latency_target_ms(mode, poll_interval):.0f}"
        print(f"{mode:17s} {p50:7.1f} {p99:7.1f} {target:>10s} {rate:9.0f} {sustained:11.0f} {write_rate:8.0f} "
              f"{ratio:10.2f} {directory:11.0f} {share:14.2f}")


def mode_list(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in SLAPD_MODES + AD_MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"unknown modes {unknown}; choose from {', '.join(SLAPD_MODES + AD_MODES)}")
    return modes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", type=mode_list, default=list(SLAPD_MODES + AD_MODES), help="comma-separated subset")
    parser.add_argument("--rate", type=float, default=50.0, help="modifies per second for the latency measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the latency measurement")
    parser.add_argument("--backlog", type=int, default=10000, help="backlog modifies against slapd")
    # Samba writes ~300 modifies/s, and its users are added once (slowly) for every run.
    parser.add_argument("--ad-backlog", type=int, default=2000, help="backlog modifies against Samba")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="the polling modes' interval, seconds")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
