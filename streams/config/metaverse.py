"""The metaverse engine's part of topology.yaml: how source objects join into persons, whose values
win, which objects of a user forest become contacts, and how many deletes pass before the breaker
holds the rest.

streams/config/topology.py reads the ``metaverse:`` section, streams/config/forests.py the user
forests' ``export_*`` keys and streams/config/contacts.py ``contacts.clash_suffix`` with the parsers
here; ``engine_settings`` turns a loaded topology into the engine's EngineSettings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from streams.config.sections import ATTRIBUTE, NOT_EMPTY, Section, kind_of, rule
from streams.events import ANCHOR_ATTRIBUTE, ObjectKind
from streams.processors.stages import EngineSettings, EngineTopics
from streams.rules.connector_space import JoinPolicy
from streams.rules.gal import ExportPolicy, GalPolicy
from streams.rules.join import JoinRule
from streams.rules.person import Precedence
from streams.rules.templates import Template, TemplateError

if TYPE_CHECKING:
    from streams.config.topology import Topics, Topology

METAVERSE_KEYS = ("join", "precedence", "delete_breaker")
# MIM's usual GAL join: a person's mail, or any of the SMTP addresses they receive mail at.
DEFAULT_JOIN = (
    JoinRule(attribute="mail", space="email"),
    JoinRule(attribute="proxyAddresses", space="email", prefix="smtp:"),
)
EXPORT_KINDS = (ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT)
DEFAULT_EXPORT_KINDS = frozenset(EXPORT_KINDS)
DEFAULT_CLASH_SUFFIX = " ({mail})"
DEFAULT_DELETE_LIMIT = 500
DEFAULT_DELETE_WINDOW_SECONDS = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteBreaker:
    """At most `limit` contact deletes pass in any `window_seconds`; the rest are held for an operator."""

    limit: int = DEFAULT_DELETE_LIMIT
    window_seconds: float = DEFAULT_DELETE_WINDOW_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaverseSettings:
    # Evaluated in order; rules sharing a space match each other's values.
    join: tuple[JoinRule, ...]
    # Ranks user forests only; `default` names every user forest (those the file left out last).
    precedence: Precedence
    delete_breaker: DeleteBreaker


def metaverse(sec: Section, user_forests: Sequence[str], central: str | None) -> MetaverseSettings:
    return MetaverseSettings(
        join=_join_rules(sec),
        precedence=_precedence(sec.child("precedence", ("default", "attributes")), user_forests, central),
        delete_breaker=_delete_breaker(sec.child("delete_breaker", ("limit", "window_seconds"))),
    )


def _join_rules(sec: Section) -> tuple[JoinRule, ...]:
    if not sec.given("join"):
        return DEFAULT_JOIN
    items = sec.value("join", (list,), "a list of join rules") or []
    if not items and isinstance(sec.node["join"], list):
        sec.error("join", "must list at least one rule; without one no two objects would ever join")
    rules: list[JoinRule] = []
    first: dict[tuple[str, str, str | None], int] = {}
    for i, item in enumerate(items):
        path = f"{sec.at('join')}[{i}]"
        join_rule = _join_rule(Section(sec.errors, item, path, ("attribute", "space", "prefix")))
        if join_rule is None:
            continue
        same = (join_rule.attribute.lower(), join_rule.space, join_rule.prefix and join_rule.prefix.lower())
        if (j := first.setdefault(same, i)) != i:
            sec.errors.append(f"{path}: same rule as {sec.at('join')}[{j}]")
        rules.append(join_rule)
    return tuple(rules)


def _join_rule(sec: Section) -> JoinRule | None:
    attribute = sec.text("attribute", check=ATTRIBUTE)
    space = sec.text("space", None, check=_SPACE)
    prefix = sec.text("prefix", None, check=NOT_EMPTY)
    if attribute is None or (space is None and sec.given("space")) or (prefix is None and sec.given("prefix")):
        return None
    return JoinRule(attribute=attribute, space=space or attribute.lower(), prefix=prefix)


def _precedence(sec: Section, user_forests: Sequence[str], central: str | None) -> Precedence:
    given = _forest_list(sec, "default", sec.node.get("default"), user_forests, central) if sec.given("default") else ()
    # Forests the list leaves out come after the named ones, in file order.
    default = tuple(dict.fromkeys((*given, *user_forests)))
    mapping = sec.value("attributes", (dict,), "a mapping of attribute to a list of forests", {}) or {}
    per_attribute: dict[str, tuple[str, ...]] = {}
    first: dict[str, str] = {}
    for name, forests in mapping.items():
        path = f"{sec.at('attributes')}.{name}"
        problem = ATTRIBUTE(name) if isinstance(name, str) else f"expected an attribute name, got {kind_of(name)}"
        if problem:
            sec.errors.append(f"{path}: {problem}")
        elif first.setdefault(name.lower(), name) != name:
            sec.errors.append(f"{path}: same attribute as {first[name.lower()]!r}; LDAP attribute names ignore case")
        ranking = _forest_list(sec, f"attributes.{name}", forests, user_forests, central)
        if not problem:
            per_attribute.setdefault(name.lower(), ranking)
    return Precedence(default=default, per_attribute=MappingProxyType(per_attribute))


def _forest_list(
    sec: Section, key: str, names: Any, user_forests: Sequence[str], central: str | None
) -> tuple[str, ...]:
    """The user forests a precedence list names, best first; each problem at its item's path."""
    path = sec.at(key)
    if not isinstance(names, list):
        sec.errors.append(f"{path}: expected a list of user forests, got {kind_of(names)}")
        return ()
    if not names:
        sec.errors.append(f"{path}: must name at least one user forest")
    ranked: dict[str, int] = {}
    for i, name in enumerate(names):
        where = f"{path}[{i}]"
        if not isinstance(name, str):
            sec.errors.append(f"{where}: expected a forest name, got {kind_of(name)}")
        elif name == central:
            sec.errors.append(f"{where}: {name!r} is the central forest; precedence ranks the user forests")
        elif name not in user_forests:
            known = ", ".join(user_forests) or "none"
            sec.errors.append(f"{where}: unknown user forest {name!r}; user forests: {known}")
        elif (j := ranked.setdefault(name, i)) != i:
            sec.errors.append(f"{where}: {name!r} is already ranked at {path}[{j}]")
    return tuple(ranked)


def _delete_breaker(sec: Section) -> DeleteBreaker:
    return DeleteBreaker(
        limit=sec.integer("limit", DEFAULT_DELETE_LIMIT, minimum=1, maximum=1_000_000),
        # Up to a week: the breaker's window is held in a table, a longer one is a unit mistaken.
        window_seconds=sec.number("window_seconds", DEFAULT_DELETE_WINDOW_SECONDS, minimum=0, inclusive=False,
                                  maximum=7 * 86400),
    )


def export_kinds(sec: Section, role: str | None, object_kinds: frozenset[ObjectKind]) -> frozenset[ObjectKind]:
    """Which of a user forest's objects become contacts."""
    if not _user_forest_only(sec, "export_kinds", role):
        return DEFAULT_EXPORT_KINDS
    names = sec.value("export_kinds", (list,), "a list", None)
    if names is None:
        return DEFAULT_EXPORT_KINDS
    if not names:
        sec.error("export_kinds", "must not be empty; a forest that exports nothing adds nothing to the GAL")
    exportable = [kind.value for kind in EXPORT_KINDS]
    kinds = set()
    for i, name in enumerate(names):
        key = f"export_kinds[{i}]"
        if name == ObjectKind.OTHER.value:
            sec.error(key, f"'other' objects never become contacts; exportable: {', '.join(exportable)}")
        elif name not in exportable:
            sec.error(key, f"unknown kind {name!r}; exportable: {', '.join(exportable)}")
        elif ObjectKind(name) not in object_kinds:
            sec.error(key, f"{name!r} is not in this forest's object_kinds, so its reader never publishes one")
        else:
            kinds.add(ObjectKind(name))
    return frozenset(kinds) or DEFAULT_EXPORT_KINDS


def export_without_mail(sec: Section, role: str | None) -> bool:
    """Whether a user forest's objects without mail become contacts (without mail and SIP)."""
    if not _user_forest_only(sec, "export_without_mail", role):
        return False
    return bool(sec.value("export_without_mail", (bool,), "true or false", False))


def _user_forest_only(sec: Section, key: str, role: str | None) -> bool:
    if role == "central" and sec.given(key):
        sec.error(key, "not allowed on the central forest: contacts are exported from the user forests into it, "
                       "never from it")
        return False
    return True


def clash_suffix(sec: Section) -> Template:
    """What tells two persons' contacts of the same name apart, e.g. " ({mail})"."""
    text = sec.value("clash_suffix", (str,), "a template string", DEFAULT_CLASH_SUFFIX)
    if text is None:
        return _DEFAULT_SUFFIX
    try:
        suffix = Template.parse(text)
    except TemplateError as error:
        sec.error("clash_suffix", "must not be empty" if not text else str(error))
        return _DEFAULT_SUFFIX
    if not suffix.placeholders:
        sec.error("clash_suffix", "needs a placeholder such as ' ({mail})': a constant suffix gives every "
                                  "clashing contact the same name again")
    return suffix


def engine_topic_collisions(errors: list[str], topics: Topics, app_id: str | None) -> None:
    """kafka.topics names that the engine's internal topics (named after streams.app_id) already use."""
    if app_id is None:
        return
    internal = EngineTopics.internal(app_id, changes="", contacts="", conflicts="", held_deletes="", errors="")
    owned = {getattr(internal, role).replace(".", "_"): role for role in ("joins", "links", "persons", "deletes")}
    for role in (field.name for field in fields(topics)):
        name = getattr(topics, role)
        if name is not None and (internal_role := owned.get(name.replace(".", "_"))):
            errors.append(f"kafka.topics.{role}: collides with the engine's internal {internal_role} topic "
                          f"{getattr(internal, internal_role)!r} (named after streams.app_id)")


def engine_settings(topology: Topology) -> EngineSettings:
    """The metaverse engine's settings for a loaded topology."""
    topics, contacts, central = topology.kafka.topics, topology.contacts, topology.central.name
    breaker = topology.metaverse.delete_breaker
    return EngineSettings(
        topics=EngineTopics.internal(
            topology.streams.app_id, changes=topics.changes, contacts=topics.contacts, conflicts=topics.conflicts,
            held_deletes=topics.held_deletes, errors=topics.errors, site_changes=topics.site_changes,
            site_writes=topics.site_writes,
        ),
        partitions=topology.kafka.partitions,
        central_forest=central,
        join=JoinPolicy(rules=topology.metaverse.join, central_forest=central, anchor_attribute=ANCHOR_ATTRIBUTE),
        gal=GalPolicy(
            forests=MappingProxyType(_export_policies(topology)),
            precedence=topology.metaverse.precedence,
            object_classes=contacts.object_classes,
            rdn_attribute=contacts.rdn_attribute,
            rdn_source=contacts.rdn_source,
            attributes=contacts.attributes,
            clash_suffix=contacts.clash_suffix,
        ),
        delete_limit=breaker.limit,
        delete_window_seconds=breaker.window_seconds,
        sweep_max_fraction=topology.streams.sweep_max_fraction,
        sweep_always_allowed=topology.streams.sweep_always_allowed,
        profiles=topology.sites.policy if topology.sites is not None else None,
    )


def _export_policies(topology: Topology) -> Mapping[str, ExportPolicy]:
    return {
        forest.name: ExportPolicy(contacts_ou=str(forest.contacts_ou), kinds=forest.export_kinds,
                                  without_mail=forest.export_without_mail)
        for forest in topology.user_forests
    }


_DEFAULT_SUFFIX = Template.parse(DEFAULT_CLASH_SUFFIX)
# Begins every join key ("<space>:<value>"), so no ':' and one spelling per space.
_SPACE = rule(re.compile(r"[a-z0-9][a-z0-9._-]*").fullmatch,
              "must be lowercase letters, digits, '.', '_' or '-' (a join key is '<space>:<value>')")
