"""The topology: which directories idsync connects, where its Kafka topics live, how contacts look.

``topology.yaml`` is read once at start-up into frozen objects. Validation collects every problem,
each with its YAML path, and reports them together, so an operator fixes the file in one pass
instead of one restart per typo. Passwords are never in the file: a forest names an environment
variable or a file, and the value is read only when a connection needs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from ldap3.core.exceptions import LDAPInvalidDnError, LDAPInvalidFilterError
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.dn import parse_dn

from streams.events import ObjectKind
from streams.config.metaverse import (
    DEFAULT_CLASH_SUFFIX,
    DEFAULT_EXPORT_KINDS,
    METAVERSE_KEYS,
    MetaverseSettings,
    clash_suffix,
    engine_topic_collisions,
    export_kinds,
    export_without_mail,
    metaverse,
)
from streams.config.sections import ATTRIBUTE, NOT_EMPTY, Section, TopologyError, choice, kind_of, rule
from streams.config.sites import SITES_KEYS, SiteSettings, sites
from streams.config.security import (
    KAFKA_SECURITY_KEYS,
    KafkaSecurity,
    LdapTls,
    MetricsAuth,
    Secret,
    kafka_security,
    ldap_tls,
    metrics_auth,
    secret,
)
from streams.rules.templates import Template, TemplateError, is_attribute_name

Role = Literal["user", "central"]
ROLES: tuple[Role, ...] = ("user", "central")
# How a forest's changes are captured; idsync/runtime.py maps each mode to its reader.
# accesslog-poll: slapd accesslog polled with an overlap window (connectors/openldap/accesslog_poll.py)
# accesslog-sync: RFC 4533 refreshAndPersist on slapd's accesslog (push, cookie-resumable)
# ad-dirsync: Active Directory DirSync control (cookie-resumable, tombstones for deletes)
# ad-usn-poll: Active Directory uSNChanged polling, deletes from the Deleted Objects container
# generic-poll: any LDAP server, modifyTimestamp polling; deletes only found by reconciliation
CHANGE_CAPTURE_MODES = ("accesslog-poll", "accesslog-sync", "ad-dirsync", "ad-usn-poll", "generic-poll")
DEFAULT_OBJECT_CLASSES = ("top", "person", "organizationalPerson", "contact")
DEFAULT_OBJECT_KINDS = frozenset({ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT})
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
class ChangeCapture:
    mode: str
    poll_interval_seconds: float
    overlap_seconds: float
    accesslog_base: str
    # generic-poll: how often a full scan compares the directory with what was published.
    reconcile_interval_seconds: float = 300.0
    # Changes made by these accounts are flagged as idsync's own (DirectoryChange.written_by_idsync).
    writer_accounts: tuple[str, ...] = ()
    # ad-dirsync: a change notification search wakes the poll at once; the interval stays the safety net.
    wake_on_change_notification: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Forest:
    name: str
    role: Role
    url: str
    base_dn: str
    bind_dn: str
    password: Secret
    change_capture: ChangeCapture
    contacts_ou: str | None
    # What the forest's reader publishes; OUs, computers and other objects are left out by default.
    object_kinds: frozenset[ObjectKind] = DEFAULT_OBJECT_KINDS
    # An LDAP filter the directory applies on top of base_dn and object_kinds.
    filter: str | None = None
    # User forests: which published objects become contacts, and whether those without mail do
    # (then without mail and SIP). The central forest exports nothing; its values are unused.
    export_kinds: frozenset[ObjectKind] = DEFAULT_EXPORT_KINDS
    export_without_mail: bool = False
    # How the connection is encrypted (with an ldaps:// url, or StartTLS) and what is verified.
    tls: LdapTls = LdapTls()

    @property
    def encryption(self) -> str:
        """ldaps, starttls or none."""
        if self.url.lower().startswith("ldaps:"):
            return "ldaps"
        return "starttls" if self.tls.starttls else "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactPolicy:
    object_classes: tuple[str, ...]
    rdn_attribute: str
    rdn_source: str
    attributes: tuple[tuple[str, Template], ...]
    # Appended to the name when another person's contact holds the plain one.
    clash_suffix: Template = Template.parse(DEFAULT_CLASH_SUFFIX)


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
    forests = _forests(top, base_dir)
    contacts = _contacts(top.child("contacts", ("object_classes", "rdn_attribute", "rdn_source", "attributes",
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


def _forests(top: Section, base_dir: Path | None) -> tuple[Forest, ...]:
    keys = ("name", "role", "url", "base_dn", "bind_dn", "password_env", "password_file", "change_capture",
            "contacts_ou", "object_kinds", "filter", "export_kinds", "export_without_mail", "tls")
    items = top.value("forests", (list,), "a list") or []
    if not items and top.given("forests"):
        top.error("forests", "must list at least the central forest")
    forests = tuple(_forest(Section(top.errors, item, f"forests[{i}]", keys), base_dir)
                    for i, item in enumerate(items))

    named: dict[str, int] = {}
    for i, forest in enumerate(forests):
        if forest.name is not None and named.setdefault(forest.name, i) != i:
            top.errors.append(f"forests[{i}].name: {forest.name!r} is already used by forests[{named[forest.name]}]")
    centrals = [i for i, forest in enumerate(forests) if forest.role == "central"]
    for i in centrals[1:]:
        top.errors.append(f"forests[{i}].role: forests[{centrals[0]}] is already central; exactly one forest is")
    if forests and not centrals and all(forest.role is not None for forest in forests):
        top.errors.append("forests: no forest has role central; exactly one must, to receive the contacts")

    central_base = forests[centrals[0]].base_dn if centrals else None
    owners: dict[tuple[Any, ...], int] = {}
    for i, forest in enumerate(forests):
        if forest.contacts_ou is None:
            continue
        ou = _rdns(forest.contacts_ou)
        if central_base is not None and not (len(ou) > len(base := _rdns(central_base)) and ou[-len(base):] == base):
            top.errors.append(f"forests[{i}].contacts_ou: must be under the central forest's base_dn {central_base!r}")
        if owners.setdefault(ou, i) != i:
            top.errors.append(f"forests[{i}].contacts_ou: same OU as forests[{owners[ou]}].contacts_ou; each user "
                              "forest needs its own, because the sink owns everything under it")
    return forests


def _forest(sec: Section, base_dir: Path | None) -> Forest:
    name = sec.text("name", check=_FOREST_NAME)
    role = sec.text("role", check=choice(ROLES))
    url = sec.text("url", check=_url_problem)
    base_dn, bind_dn = sec.text("base_dn", check=_dn_problem), sec.text("bind_dn", check=_dn_problem)
    contacts_ou = sec.text("contacts_ou", None, check=_dn_problem)
    if role == "central" and sec.given("contacts_ou"):
        sec.error("contacts_ou", "not allowed on the central forest: contacts are made in it, not copied from it")
    elif role == "user" and not sec.given("contacts_ou"):
        sec.error("contacts_ou", "required for a user forest: the OU of the central forest receiving its contacts")
    capture = sec.child("change_capture", ("mode", "poll_interval_seconds", "overlap_seconds", "accesslog_base",
                                           "reconcile_interval_seconds", "wake_on_change_notification",
                                           "writer_accounts"))
    mode = capture.text("mode", CHANGE_CAPTURE_MODES[0], check=choice(CHANGE_CAPTURE_MODES))
    return Forest(
        name=name,
        role=role,
        url=url,
        base_dn=base_dn,
        bind_dn=bind_dn,
        password=secret(sec, base_dir),
        change_capture=ChangeCapture(
            mode=mode,
            poll_interval_seconds=capture.number("poll_interval_seconds", 0.2, minimum=0, inclusive=False,
                                                 maximum=3600),
            overlap_seconds=capture.number("overlap_seconds", 2.0, minimum=0, inclusive=True, maximum=3600),
            accesslog_base=capture.text("accesslog_base", "cn=accesslog", check=_dn_problem),
            reconcile_interval_seconds=capture.number(
                "reconcile_interval_seconds", 300.0, minimum=0, inclusive=False, maximum=7 * 86400
            ),
            writer_accounts=_writer_accounts(capture, role, bind_dn),
            wake_on_change_notification=_wake_on_change_notification(capture, mode),
        ),
        contacts_ou=contacts_ou if role == "user" else None,
        object_kinds=(object_kinds := _object_kinds(sec)),
        filter=sec.text("filter", None, check=ldap_filter_problem),
        export_kinds=export_kinds(sec, role, object_kinds),
        export_without_mail=export_without_mail(sec, role),
        tls=ldap_tls(sec, base_dir),
    )


def _wake_on_change_notification(capture: Section, mode: str | None) -> bool:
    wake = capture.value("wake_on_change_notification", (bool,), "true or false", False)
    if wake and mode is not None and mode != "ad-dirsync":
        capture.error("wake_on_change_notification", f"only for mode ad-dirsync (AD's change notification "
                      f"control), not {mode}")
    return bool(wake)


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


def _object_kinds(sec: Section) -> frozenset[ObjectKind]:
    names = sec.value("object_kinds", (list,), "a list", sorted(DEFAULT_OBJECT_KINDS)) or []
    known = [kind.value for kind in ObjectKind]
    kinds = set()
    for i, name in enumerate(names):
        if name in known:
            kinds.add(ObjectKind(name))
        else:
            sec.error(f"object_kinds[{i}]", f"unknown kind {name!r}; known: {', '.join(known)}")
    if not names and sec.given("object_kinds"):
        sec.error("object_kinds", "must not be empty")
    return frozenset(kinds) or DEFAULT_OBJECT_KINDS


def _writer_accounts(capture: Section, role: Role | None, bind_dn: str | None) -> tuple[str, ...]:
    """By default the central forest's own bind_dn: the account the contact writer binds as."""
    default = [bind_dn] if role == "central" and bind_dn is not None else []
    accounts = capture.value("writer_accounts", (list,), "a list of DNs", default) or []
    mode = capture.node.get("mode", CHANGE_CAPTURE_MODES[0])
    if mode in _NO_MODIFIER_MODES:
        if capture.given("writer_accounts"):
            capture.error("writer_accounts", f"{mode} cannot tell who made a change; idsync's own entries are "
                                             "recognised by their idsyncAnchor marker instead")
        return ()
    for i, dn in enumerate(accounts):
        problem = _dn_problem(dn) if isinstance(dn, str) else f"expected a DN, got {kind_of(dn)}"
        if problem:
            capture.error(f"writer_accounts[{i}]", problem)
    return tuple(dn for dn in accounts if isinstance(dn, str))


def ldap_filter_problem(value: str) -> str | None:
    """Why `value` is not an RFC 4515 filter that idsync can combine with its own, or None."""
    text = value.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return f"must be enclosed in parentheses, e.g. (employeeType=staff); got {value!r}"
    if text.count("(") != text.count(")"):
        return (f"unbalanced parentheses ({text.count('(')} '(' and {text.count(')')} ')'; a parenthesis "
                f"inside a value is written \\28 or \\29): {value!r}")
    if (bad := _BAD_FILTER_ESCAPE.search(text)) is not None:
        return f"'\\' must be followed by two hex digits (RFC 4515), at position {bad.start()}: {value!r}"
    try:
        root = parse_filter(text, None, False, False, None, False)
        compile_filter(root.elements[0])
    except LDAPInvalidFilterError as error:
        return f"not a valid LDAP filter ({error}): {value!r}"
    for node in _filter_assertions(root):
        attribute, rule = node.assertion.get("attr"), node.assertion.get("matchingRule")
        if not attribute and not rule:
            return f"an assertion names no attribute: {value!r}"
        for name in (attribute, rule):
            if name and not _ATTRIBUTE_DESCRIPTION.fullmatch(name):
                return f"{name!r} is not an attribute name or OID: {value!r}"
    return None


def _filter_assertions(node: Any) -> Iterator[Any]:
    if node.assertion is not None:
        yield node
    for element in node.elements:
        yield from _filter_assertions(element)


def _contacts(sec: Section) -> ContactPolicy:
    classes = sec.value("object_classes", (list,), "a list", list(DEFAULT_OBJECT_CLASSES)) or []
    if not classes and sec.given("object_classes"):
        sec.error("object_classes", "must not be empty")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not is_attribute_name(name):
            sec.error(f"object_classes[{i}]", "not an object class name (a letter, then letters, digits or hyphens)")
    rdn_attribute = sec.text("rdn_attribute", "cn", check=ATTRIBUTE)
    return ContactPolicy(
        object_classes=tuple(classes),
        rdn_attribute=rdn_attribute,
        rdn_source=sec.text("rdn_source", "cn", check=ATTRIBUTE),
        attributes=_attributes(sec, rdn_attribute),
        clash_suffix=clash_suffix(sec),
    )


def _attributes(sec: Section, rdn_attribute: str | None) -> tuple[tuple[str, Template], ...]:
    mapping = sec.value("attributes", (dict,), "a mapping of contact attribute to template") or {}
    if not mapping and sec.given("attributes"):
        sec.error("attributes", "must map at least one contact attribute to a template")
    attributes: list[tuple[str, Template]] = []
    first: dict[str, str] = {}
    for name, text in mapping.items():
        path, folded = f"{sec.at('attributes')}.{name}", str(name).lower()
        problem = ATTRIBUTE(name) if isinstance(name, str) else f"expected an attribute name, got {kind_of(name)}"
        if problem:
            sec.errors.append(f"{path}: {problem}")
        elif first.setdefault(folded, name) != name:
            sec.errors.append(f"{path}: same attribute as {first[folded]!r}; LDAP attribute names ignore case")
        elif rdn_attribute is not None and folded == rdn_attribute.lower():
            sec.errors.append(f"{path}: is the rdn_attribute; its value comes from rdn_source and changes only by "
                              "renaming the contact (modrdn), so a template here would fight the rename")
        elif folded == "objectclass":
            sec.errors.append(f"{path}: set contacts.object_classes instead")
        if not isinstance(text, str):
            sec.errors.append(f"{path}: expected a template string, got {kind_of(text)}"
                              " (quote it: YAML reads unquoted TRUE, yes or 1 as non-strings)")
            continue
        try:
            attributes.append((name, Template.parse(text)))
        except TemplateError as error:
            sec.errors.append(f"{path}: {error}")
    return tuple(attributes)


def _rdns(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A DN in comparable form: RDNs, each a sorted tuple of case-folded (type, value) pairs."""
    rdns: list[tuple[tuple[str, str], ...]] = []
    current: list[tuple[str, str]] = []
    for attribute, value, separator in parse_dn(dn, strip=True):
        current.append((attribute.lower(), value.lower()))
        if separator != "+":  # '+' joins the parts of a multi-valued RDN
            rdns.append(tuple(sorted(current)))
            current = []
    return tuple(rdns)


_FOREST_NAME = rule(re.compile(r"[a-z][a-z0-9-]{0,62}").fullmatch,
                    "must be 1-63 lowercase letters, digits or '-', starting with a letter")
_KAFKA_NAME = rule(re.compile(r"(?!\.\.?$)[a-zA-Z0-9._-]{1,249}").fullmatch,
                   "not a valid Kafka name (1-249 letters, digits, '.', '_' or '-')")
_ATTRIBUTE_DESCRIPTION = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)(?:;[A-Za-z0-9-]+)*")
_BAD_FILTER_ESCAPE = re.compile(r"\\(?![0-9A-Fa-f]{2})")
# These modes' sources do not name the account that made a change.
_NO_MODIFIER_MODES = ("ad-dirsync", "ad-usn-poll")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


def _dn_problem(value: str) -> str | None:
    try:
        parse_dn(value, strip=True)
    except LDAPInvalidDnError as error:
        return f"not a valid DN ({error}): {value!r}"
    return None


def _bootstrap_problem(value: str) -> str | None:
    for server in value.split(","):
        if (match := _HOST_PORT.fullmatch(server)) is None or not 0 < int(match.group(1)) < 65536:
            return f"expected host:port[,host:port...] without spaces, got {value!r}"
    return None


def _listen_problem(value: str) -> str | None:
    if (match := _HOST_PORT.fullmatch(value)) is None or not 0 < int(match.group(1)) < 65536:
        return f"expected host:port (e.g. 127.0.0.1:9464), got {value!r}"
    return None


def _url_problem(value: str) -> str | None:
    url = urlsplit(value)
    if "@" in url.netloc:
        return "must not contain credentials; use password_env or password_file"
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme not in ("ldap", "ldaps") or not url.hostname or port is None:
        return f"expected ldap://host:port or ldaps://host:port, got {value!r}"
    if url.path not in ("", "/") or url.query or url.fragment:
        return f"must not have a path or query (the base DN goes in base_dn), got {value!r}"
    return None
