"""The topology: which directories idsync connects, where its Kafka topics live, how contacts look.

``topology.yaml`` is read once at start-up into frozen objects. Validation collects every problem,
each with its YAML path, and reports them together, so an operator fixes the file in one pass
instead of one restart per typo. Passwords are never in the file: a forest names an environment
variable or a file, and the value is read only when a connection needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.config.contacts import ContactPolicy, contact_policy
from streams.config.forests import Forest, forests as forest_list
from streams.config.metaverse import METAVERSE_KEYS, MetaverseSettings, engine_topic_collisions, metaverse
from streams.config.sections import NOT_EMPTY, Section, TopologyError, choice, kind_of, rule
from streams.config.sites import SITES_KEYS, SiteSettings, sites
from streams.config.security import KAFKA_SECURITY_KEYS, KafkaSecurity, MetricsAuth, kafka_security, metrics_auth

# Only this machine can reach the metrics unless the topology says otherwise.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
# Upper bounds of numeric settings: beyond them a value is a typo (a unit mistaken, a digit too
# many), never a deployment. Kafka itself refuses more than 32767 replicas; a cluster rarely has 32.
MAX_PARTITIONS = 10_000
STATE_STORES = ("rocksdb", "memory")
MAX_REPLICATION_FACTOR = 32
DEFAULT_TOPICS = {"changes": "idsync.directory-changes", "positions": "idsync.reader-positions",
                  "contacts": "idsync.central-contacts", "errors": "idsync.errors",
                  "conflicts": "idsync.conflicts", "held_deletes": "idsync.held-deletes",
                  "site_changes": "idsync.site-changes", "site_writes": "idsync.site-writes"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    changes: str
    positions: str
    contacts: str
    errors: str
    # The metaverse engine's reports: join conflicts, and deletes the breaker holds for an operator.
    conflicts: str = DEFAULT_TOPICS["conflicts"]
    held_deletes: str = DEFAULT_TOPICS["held_deletes"]
    # Person sync: membership changes read from site stores, and property writes to them.
    site_changes: str = DEFAULT_TOPICS["site_changes"]
    site_writes: str = DEFAULT_TOPICS["site_writes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str
    client_id: str
    partitions: int
    replication_factor: int
    topics: Topics
    # Applied alike to every client idsync creates (streams/kafka/clients.py).
    security: KafkaSecurity = KafkaSecurity()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsSettings:
    app_id: str
    commit_interval_seconds: float
    session_timeout_seconds: float
    sweep_max_fraction: float
    sweep_always_allowed: int
    # How long the engine's producer lets a batch fill before sending it (see topology.yaml).
    producer_linger_ms: int = 10
    # Where the engine's tables live between restarts: "rocksdb" (on disk under state_dir, so a
    # restart reads only the changelogs' tail) or "memory" (every changelog read again at start).
    state_store: str = "rocksdb"
    state_dir: Path = Path("idsync-state")



@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    """Where the worker serves Prometheus metrics (GET /metrics), and who may read them."""

    host: str
    port: int
    # None: anyone who reaches host:port (by default only this machine: 127.0.0.1).
    auth: MetricsAuth | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    kafka: KafkaSettings
    streams: StreamsSettings
    forests: tuple[Forest, ...]
    contacts: ContactPolicy
    metaverse: MetaverseSettings
    source: Path | None
    # None: the worker serves no metrics endpoint.
    metrics: MetricsSettings | None = None
    # None: no person sync (no site store is read or written).
    sites: SiteSettings | None = None

    @property
    def central(self) -> Forest:
        return next(forest for forest in self.forests if forest.role == "central")

    @property
    def user_forests(self) -> tuple[Forest, ...]:
        return tuple(forest for forest in self.forests if forest.role == "user")

    def forest(self, name: str) -> Forest:
        for forest in self.forests:
            if forest.name == name:
                return forest
        known = ", ".join(forest.name for forest in self.forests)
        raise KeyError(f"no forest named {name!r} in the topology (it has: {known})")


def load_topology(path: str | Path) -> Topology:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise TopologyError([f"cannot read: {error.strerror}"], source=source) from None
    except UnicodeDecodeError:
        raise TopologyError(["not UTF-8 text"], source=source) from None
    # Position and problem only, never PyYAML's own message: it quotes the offending line, which
    # could hold a password pasted by mistake.
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark, f" ({error.context})" if error.context else ""
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise TopologyError([f"{where}invalid YAML: {error.problem}{context}"], source=source) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise TopologyError([f"line {line}: invalid YAML: {error.reason}"], source=source) from None
    return parse_topology(data, source=source)


def parse_topology(data: Any, *, source: Path | None = None) -> Topology:
    """Validates parsed YAML; relative password files resolve against the directory of source."""
    if not isinstance(data, dict):
        raise TopologyError([f"expected a mapping of kafka, streams, forests and contacts, got {kind_of(data)}"],
                            source=source)
    errors: list[str] = []
    top = Section(errors, data, "", ("kafka", "streams", "forests", "contacts", "metaverse", "metrics", "sites"))
    base_dir = source.absolute().parent if source is not None else None
    kafka = _kafka(top.child("kafka", ("bootstrap_servers", "client_id", "partitions", "replication_factor",
                                       "topics", *KAFKA_SECURITY_KEYS)), base_dir)
    streams = _streams(top.child("streams", ("app_id", "commit_interval_seconds", "session_timeout_seconds",
                                             "sweep_max_fraction", "sweep_always_allowed", "producer_linger_ms",
                                             "state_store", "state_dir")), base_dir)
    engine_topic_collisions(errors, kafka.topics, streams.app_id)
    forests = forest_list(top, base_dir)
    contacts = contact_policy(top.child("contacts", ("object_classes", "rdn_attribute", "rdn_source", "attributes",
                                                "clash_suffix")))
    central = next((forest.name for forest in forests if forest.role == "central"), None)
    user_forests = [forest.name for forest in forests if forest.role == "user" and forest.name is not None]
    topology = Topology(
        kafka=kafka,
        streams=streams,
        forests=forests,
        contacts=contacts,
        metaverse=metaverse(top.child("metaverse", METAVERSE_KEYS), user_forests, central),
        source=source,
        metrics=_metrics(top.child("metrics", ("listen", "auth")), base_dir) if top.given("metrics") else None,
        sites=sites(top.child("sites", SITES_KEYS), base_dir, tuple(f.name for f in forests if f.name))
        if top.given("sites") else None,
    )
    if errors:
        raise TopologyError(errors, source=source)
    return topology


class _StrictLoader(yaml.SafeLoader):
    """Rejects duplicate keys, which PyYAML would otherwise resolve silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, Any]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key.value!r}", key.start_mark)
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def _kafka(sec: Section, base_dir: Path | None) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=sec.text("bootstrap_servers", check=_bootstrap_problem),
        client_id=sec.text("client_id", "idsync", check=NOT_EMPTY),
        partitions=sec.integer("partitions", 3, minimum=1, maximum=MAX_PARTITIONS),
        replication_factor=sec.integer("replication_factor", 1, minimum=1, maximum=MAX_REPLICATION_FACTOR),
        topics=_topics(sec.child("topics", tuple(DEFAULT_TOPICS))),
        security=kafka_security(sec, base_dir),
    )


def _topics(sec: Section) -> Topics:
    names = {role: sec.text(role, default, check=_KAFKA_NAME) for role, default in DEFAULT_TOPICS.items()}
    # Kafka refuses topics whose names differ only in '.' versus '_': they collide in its metrics.
    owners: dict[str, str] = {}
    for role, name in names.items():
        if name is not None and (other := owners.setdefault(name.replace(".", "_"), role)) != role:
            sec.error(role, f"collides with {sec.at(other)} ({names[other]!r}); each topic needs its own name"
                      + ("" if name == names[other] else ", and Kafka treats '.' and '_' as the same"))
    return Topics(**names)


def _streams(sec: Section, base_dir: Path | None) -> StreamsSettings:
    state_dir = Path(sec.text("state_dir", "idsync-state", check=NOT_EMPTY) or "idsync-state")
    if not state_dir.is_absolute() and base_dir is not None:
        state_dir = base_dir / state_dir
    return StreamsSettings(
        app_id=sec.text("app_id", "idsync", check=_KAFKA_NAME),
        commit_interval_seconds=sec.number("commit_interval_seconds", 1.0, minimum=0, inclusive=False, maximum=600),
        # Kafka's bounds for a group session: group.min.session.timeout.ms (6 s) and
        # group.max.session.timeout.ms (30 min) by default.
        session_timeout_seconds=sec.number("session_timeout_seconds", 10.0, minimum=6, inclusive=True, maximum=1800),
        # A fraction of the forest's objects: above 1 the guard could never trip.
        sweep_max_fraction=sec.number("sweep_max_fraction", 0.25, minimum=0, inclusive=True, maximum=1),
        sweep_always_allowed=sec.integer("sweep_always_allowed", 10, minimum=0, maximum=1_000_000),
        producer_linger_ms=sec.integer("producer_linger_ms", 10, minimum=0, maximum=1000),
        state_store=sec.text("state_store", "rocksdb", check=choice(STATE_STORES)),
        state_dir=state_dir,
    )


def _metrics(sec: Section, base_dir: Path | None) -> MetricsSettings:
    listen = sec.text("listen", DEFAULT_METRICS_LISTEN, check=_listen_problem)
    # No listen (the error is reported already): a placeholder the failed load never returns.
    host, port = split_listen(listen) if listen else ("", 0)
    return MetricsSettings(host=host, port=port, auth=metrics_auth(sec, base_dir))


def split_listen(value: str) -> tuple[str, int]:
    """host:port (an IPv6 host in brackets) -> (host, port); ValueError when it is not one."""
    if (problem := _listen_problem(value)) is not None:
        raise ValueError(problem)
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


_KAFKA_NAME = rule(re.compile(r"(?!\.\.?$)[a-zA-Z0-9._-]{1,249}").fullmatch,
                   "not a valid Kafka name (1-249 letters, digits, '.', '_' or '-')")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


def _bootstrap_problem(value: str) -> str | None:
    for server in value.split(","):
        if (match := _HOST_PORT.fullmatch(server)) is None or not 0 < int(match.group(1)) < 65536:
            return f"expected host:port[,host:port...] without spaces, got {value!r}"
    return None


def _listen_problem(value: str) -> str | None:
    if (match := _HOST_PORT.fullmatch(value)) is None or not 0 < int(match.group(1)) < 65536:
        return f"expected host:port (e.g. 127.0.0.1:9464), got {value!r}"
    return None


