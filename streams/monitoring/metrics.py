"""Prometheus metrics of a worker process, and the HTTP endpoint that serves them.

Metrics are process-wide, like loggers: each component updates its own labelled series, and the
endpoint (``metrics.listen`` in topology.yaml, 127.0.0.1:9464 by default) serves them all from the
worker's event loop. With ``metrics.auth`` a scrape needs HTTP basic auth or a bearer token.
Consumer lag is read from Kafka at each scrape, so it is exactly as fresh as the scrape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiokafka.errors import KafkaError
import time
from datetime import datetime, timezone

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from streams.config.security import MetricsAuth
from streams.config.topology import MetricsSettings, TopologyError
from streams.kafka.lag import LagProbe
from streams.monitoring.outages import describe_error

log = logging.getLogger(__name__)

READER_UP = Gauge("idsync_reader_up", "1 unless the forest's reader is waiting out an outage", ["forest"])
READER_OUTAGES = Counter(
    "idsync_reader_outages", "Outages of the forest's reader (directory or Kafka unavailable)", ["forest"]
)
READER_SECONDS_SINCE_READ = Gauge(
    "idsync_reader_seconds_since_last_read", "Seconds since the reader's last successful read (or its start)",
    ["forest"],
)
CHANGES_PUBLISHED = Counter("idsync_reader_changes_published", "Directory changes published to Kafka", ["forest"])
POSITION_SAVED = Gauge(
    "idsync_reader_position_saved_timestamp_seconds", "When the reader last saved its position (Unix time)",
    ["forest"],
)
SINK_UP = Gauge("idsync_sink_up", "1 unless the contact writer is waiting out an outage of the central forest")
SINK_OUTAGES = Counter("idsync_sink_outages", "Outages of the central forest seen by the contact writer")
CONTACTS_WRITTEN = Counter("idsync_sink_contacts_written", "Contacts created, updated or moved in the central forest")
CONTACTS_DELETED = Counter("idsync_sink_contacts_deleted", "Contacts deleted from the central forest")
SINK_ERRORS = Counter(
    "idsync_sink_errors",
    "Failed contact writes: kind=unavailable (the batch is retried), kind=rejected (dead-lettered)",
    ["kind"],
)
DEAD_LETTERS = Counter("idsync_dead_letters", "Records sent to the error topic, by stage", ["stage"])
CONSUMER_LAG = Gauge(
    "idsync_consumer_lag", "Records of the topic the group has not committed yet", ["group", "topic", "partition"]
)
SINK_LATENCY = Histogram(
    "idsync_sink_latency_seconds",
    "From the change in the source directory (its changed_at) to the contact written, per sink",
    ["sink"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
STAGE_RECORDS = Counter(
    "idsync_stage_records", "Records handled by each stage (reader, metaverse-engine, contact-writer); "
    "rate() gives records per second", ["stage"],
)
SITE_SINK_UP = Gauge("idsync_site_writer_up", "1 unless the site store's writer is waiting out an outage", ["store"])
SITE_SINK_OUTAGES = Counter("idsync_site_writer_outages", "Outages of the site store seen by its writer", ["store"])
SITE_WRITES = Counter(
    "idsync_site_writes",
    "Profile writes to site members: outcome=written, unchanged (nothing differed), skipped (no longer a "
    "member), error (dead-lettered)", ["store", "outcome"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "idsync_consumer_lag_seconds", "Age of the oldest record the group has not consumed (0 when caught up)", ["group"]
)

# A scrape waits this long for Kafka before it answers without the lag series.
LAG_TIMEOUT_SECONDS = 5.0


class LagHistory:
    """The lag samples of the last hour per group, kept in memory for the status page's chart."""

    def __init__(self, window_seconds: float = 3600.0) -> None:
        self.window = window_seconds
        self._samples: dict[str, deque[tuple[float, int, float]]] = {}

    def add(self, group: str, at: float, records: int, seconds: float) -> None:
        samples = self._samples.setdefault(group, deque())
        samples.append((at, records, seconds))
        while samples and samples[0][0] < at - self.window:
            samples.popleft()

    def samples(self) -> dict[str, list[tuple[float, int, float]]]:
        """Per group, (time, records, seconds) oldest first."""
        return {group: list(samples) for group, samples in self._samples.items()}


class LagMetrics:
    """Fills idsync_consumer_lag for the watched (group, topic) pairs, once per scrape."""

    def __init__(self, probe: LagProbe, watched: Sequence[tuple[str, str]]) -> None:
        self._probe = probe
        self._watched = tuple(watched)
        self._failing = False
        self._groups: dict[str, list[str]] = {}
        for group, topic in self._watched:
            self._groups.setdefault(group, []).append(topic)
        # Scrapes, /readyz and the status page may refresh at once; the group reader seeks one consumer.
        self._lock = asyncio.Lock()
        self.history = LagHistory()

    @property
    def kafka_reachable(self) -> bool:
        """False since the last refresh could not read the lag from Kafka."""
        return not self._failing

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        """Unknown lag is left out rather than shown stale: a missing series is honest, an old one is not."""
        try:
            readings = {
                (group, topic): await asyncio.wait_for(self._probe.lag(group, topic), LAG_TIMEOUT_SECONDS)
                for group, topic in self._watched
            }
            # The age of the oldest unconsumed record, computed as `idsync lag` does.
            offsets = [await asyncio.wait_for(self._probe.group_offsets(group, topics), LAG_TIMEOUT_SECONDS * 2)
                       for group, topics in self._groups.items()]
        except (KafkaError, LookupError, TimeoutError) as exc:
            CONSUMER_LAG.clear()
            CONSUMER_LAG_SECONDS.clear()
            if not self._failing:
                log.warning("consumer lag unreadable error=%r", describe_error(exc))
            self._failing = True
            return
        if self._failing:
            log.info("consumer lag readable again")
        self._failing = False
        # No await from here on: a concurrent scrape never sees a half-filled gauge.
        CONSUMER_LAG.clear()
        for (group, topic), lag in readings.items():
            for partition, records in lag.items():
                CONSUMER_LAG.labels(group, topic, str(partition)).set(records)
        CONSUMER_LAG_SECONDS.clear()
        for group in offsets:
            seconds = max((p.lag_seconds(group.at) for p in group.partitions), default=0.0)
            records = sum(p.lag for p in group.partitions)
            CONSUMER_LAG_SECONDS.labels(group.group).set(seconds)
            self.history.add(group.group, group.at, records, seconds)


async def serve_metrics(settings: MetricsSettings, lag: LagMetrics,
                        status_page: Callable[[], Awaitable[str]] | None = None) -> None:
    """Serve GET /metrics, /readyz and /status (the HTML `status_page` returns) until cancelled;
    with settings.auth, only to a request that proves it. /healthz needs no proof."""
    render = make_aiohttp_handler(REGISTRY)

    async def metrics(request: web.Request) -> web.StreamResponse:
        if settings.auth is not None and not _authorized(request, settings.auth):
            return _unauthorized(settings.auth)
        await lag.refresh()
        return await render(request)

    async def healthz(request: web.Request) -> web.StreamResponse:
        # Liveness only: the process and its event loop answer. No auth, so a probe needs no secret,
        # and it says nothing about forests, groups or topics.
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.StreamResponse:
        if settings.auth is not None and not _authorized(request, settings.auth):
            return _unauthorized(settings.auth)
        await lag.refresh()
        down = components_down(kafka_reachable=lag.kafka_reachable)
        if down:
            return web.Response(status=503, text="".join(f"down {name}\n" for name in down))
        return web.Response(text="ready\n")

    async def status(request: web.Request) -> web.StreamResponse:
        if settings.auth is not None and not _authorized(request, settings.auth):
            return _unauthorized(settings.auth)
        if status_page is None:
            raise web.HTTPNotFound()
        return web.Response(text=await status_page(), content_type="text/html")

    if settings.auth is None and not _loopback(settings.host):
        log.warning("metrics endpoint open to the network without authentication host=%s: anyone who reaches "
                    "it reads idsync's forest names, group ids and topics; set metrics.auth", settings.host)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("metrics endpoint listening url=http://%s:%d/metrics auth=%s", settings.host, settings.port,
                 settings.auth.scheme.lower() if settings.auth else "none")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def observe_sink_latency(sink: str, changed_at: str | None, *, now: float | None = None) -> None:
    """Observe how long ago the source change happened; nothing when the record carries no time
    (written by an older engine) or an unreadable one. A source clock ahead of ours counts as 0."""
    if not changed_at:
        return
    try:
        moment = datetime.fromisoformat(changed_at.replace("Z", "+00:00"))
    except ValueError:
        return
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    SINK_LATENCY.labels(sink).observe(max(0.0, (time.time() if now is None else now) - moment.timestamp()))


def components_down(*, kafka_reachable: bool) -> list[str]:
    """The components not up, read from the up gauges the outage watchers keep (a reader of each
    forest and site store, the contact writer, each site store's writer) and from whether Kafka answered the last lag read."""
    down = [f"reader forest={forest}" for forest, up in _gauge_values(READER_UP, "forest") if up != 1]
    down += ["contact-writer" for _, up in _gauge_values(SINK_UP, None) if up != 1]
    down += [f"site-writer store={store}" for store, up in _gauge_values(SITE_SINK_UP, "store") if up != 1]
    if not kafka_reachable:
        down.append("kafka")
    return down


def _gauge_values(gauge: Gauge, label: str | None) -> list[tuple[str, float]]:
    return [(sample.labels.get(label, "") if label else "", sample.value)
            for family in gauge.collect() for sample in family.samples]


def _unauthorized(auth: MetricsAuth) -> web.Response:
    return web.Response(status=401, text="unauthorized\n",
                        headers={"WWW-Authenticate": f'{auth.scheme} realm="idsync metrics"'})


def _authorized(request: web.Request, auth: MetricsAuth) -> bool:
    """The request's Authorization header carries the configured credentials (compared in
    constant time). The secret is read now: a rotated one applies at the next scrape."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != auth.scheme.lower():
        return False
    try:
        secret = auth.secret.reveal()
    except TopologyError as exc:
        log.error("metrics credentials unreadable, every scrape refused error=%r", str(exc))
        return False
    given, expected = credentials.strip(), secret
    if auth.username is not None:
        try:
            given = base64.b64decode(given, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{auth.username}:{secret}"
    return hmac.compare_digest(given.encode(), expected.encode())


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
