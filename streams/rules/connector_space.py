"""The connector space: each source object's state and its link to a metaverse person.

A change folds into the object's state (streams/rules/metaverse.py); what follows for the
person is decided here, as messages for the join index and the person's partition:
- an object idsync manages (a central contact carrying a person id in its anchor attribute)
  belongs to that person, without a join;
- a joined object sends its state to its person, and probes its join keys whenever they
  change: a free key is registered to the person, a key that another person holds is a join
  conflict (one object matching two persons);
- an object not joined yet claims its keys (streams/rules/join.py), or projects a person of its
  own when it has no key at all;
- an object that is deleted or leaves the scope of joining leaves its person.
The link is sticky, as in MIM: a joined object stays with its person when its values change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from streams.events import EventDecodeError, ObjectKind, check_schema, encode, is_person_anchor, parse
from streams.metaverse_events import ConnectorState, JoinClaim, JoinProbe
from streams.rules.join import Claim, JoinRule, join_keys, projected_person
from streams.rules.metaverse import SourceObject
from streams.rules.person import Connector

JOINABLE_KINDS = frozenset({ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT})


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinPolicy:
    rules: tuple[JoinRule, ...]
    central_forest: str
    anchor_attribute: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Linkage:
    person: str | None = None
    # The claim on its way through the join index, while the object is not joined yet.
    claim_id: str | None = None
    probe_id: str | None = None
    probe_keys: tuple[str, ...] = ()
    # Per probed key, the person holding it ("" while another claim holds it).
    answers: Mapping[str, str] = field(default_factory=dict)
    # Other persons the object's keys belong to: an open join conflict.
    conflicting: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceEntry:
    SCHEMA = "idsync.connector-space-entry"
    VERSION = 1

    object: SourceObject
    link: Linkage = field(default_factory=Linkage)

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SpaceEntry:
        data = parse(raw)
        check_schema(data, cls)
        try:
            link = data["link"]
            return cls(
                object=SourceObject.from_dict(data["object"]),
                link=Linkage(
                    person=link.get("person"), claim_id=link.get("claim_id"), probe_id=link.get("probe_id"),
                    probe_keys=tuple(link.get("probe_keys", ())), answers=dict(link.get("answers", {})),
                    conflicting=tuple(link.get("conflicting", ())),
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


Message = JoinClaim | JoinProbe | ConnectorState


def managed_for(obj: SourceObject, policy: JoinPolicy) -> str | None:
    """The person id on a central entry idsync manages (its own contacts), else None."""
    if obj.forest != policy.central_forest or obj.deleted:
        return None
    values = obj.attributes.get(policy.anchor_attribute.lower(), ())
    return values[0] if values and is_person_anchor(values[0]) else None


def joinable(obj: SourceObject, policy: JoinPolicy) -> bool:
    """An object that belongs to a person. What a writer account created in a user forest is
    idsync's own output read back (never a person: that would loop). In the central forest
    idsync's output carries its anchor (managed_for), so a central entry the writer account made
    without one is a person's entry like any other: small sites write contacts by hand with the
    same administrator account that idsync binds as, and those must be adopted."""
    if obj.deleted or obj.kind not in JOINABLE_KINDS:
        return False
    return obj.forest == policy.central_forest or not obj.created_by_idsync


def connector_of(obj: SourceObject, policy: JoinPolicy, managed: str | None) -> Connector:
    return Connector(
        anchor=obj.key, forest=obj.forest, central=obj.forest == policy.central_forest,
        kind=obj.kind or ObjectKind.OTHER, dn=obj.dn, attributes=obj.attributes, position=obj.position,
        managed_for=managed, changed_at=obj.changed_at,
    )


def after_change(entry: SpaceEntry, policy: JoinPolicy, *, hold_delete: bool = False) -> tuple[SpaceEntry, list[Message]]:
    """What the object's current state means for its person. Sending the same messages twice is
    harmless, so a re-delivered change may call this again for whatever a crash lost.
    `hold_delete`: the object left in a sweep over the mass-delete guard."""
    obj, link = entry.object, entry.link
    managed = managed_for(obj, policy)
    if managed is None and not joinable(obj, policy):
        if link.person is None:
            return entry, []
        return entry, [_left(obj, link.person, hold_delete)]
    messages: list[Message] = []
    if managed is not None:
        if link.person not in (None, managed):
            messages.append(_left(obj, link.person))
        link = replace(link, person=managed, claim_id=None)
    if link.person is not None:
        messages.append(ConnectorState(
            person=link.person, anchor=obj.key, position=obj.position,
            connector=connector_of(obj, policy, managed).to_dict(),
        ))
        if managed is None:
            link, probes = _probe(obj, link, policy)
            messages.extend(probes)
        return replace(entry, link=link), messages
    if link.claim_id is not None:
        return entry, []  # joining: the link is on its way
    keys = join_keys(policy.rules, obj.attributes)
    if not keys:
        return after_change(replace(entry, link=replace(link, person=projected_person(obj.key))), policy)
    claim = Claim(anchor=obj.key, claim_id=obj.position, keys=keys, step=0)
    return replace(entry, link=replace(link, claim_id=claim.claim_id)), [JoinClaim.of(claim)]


def after_link(
    entry: SpaceEntry, person: str, policy: JoinPolicy, *, settled: tuple[str, ...] = ()
) -> tuple[SpaceEntry, list[Message]]:
    """The join index answered: the object belongs to `person` (the first answer wins). The keys
    the claim `settled` are the person's already: only the others are probed."""
    if entry.link.person is not None:
        return entry, []
    keys = join_keys(policy.rules, entry.object.attributes)
    known = {key: person for key in settled if key in keys}
    link = replace(entry.link, person=person, claim_id=None, probe_id=entry.object.position, probe_keys=keys, answers=known)
    return after_change(replace(entry, link=link), policy)


def after_probe_answer(
    entry: SpaceEntry, probe_id: str, key: str, owner: str | None
) -> tuple[SpaceEntry, tuple[str, ...] | None]:
    """A probed key's owner. Returns the entry and, once every key answered and the set of
    other persons changed, the new set (empty: the conflict is over)."""
    link = entry.link
    if probe_id != link.probe_id or key not in link.probe_keys:
        return entry, None
    answers = {**link.answers, key: owner or ""}
    link = replace(link, answers=answers)
    if set(answers) != set(link.probe_keys):
        return replace(entry, link=link), None
    others = tuple(sorted({o for o in answers.values() if o and o != link.person}))
    changed = others != link.conflicting
    return replace(entry, link=replace(link, conflicting=others)), others if changed else None


def _probe(obj: SourceObject, link: Linkage, policy: JoinPolicy) -> tuple[Linkage, list[Message]]:
    keys = join_keys(policy.rules, obj.attributes)
    if keys == link.probe_keys and set(link.answers) == set(keys):
        return link, []
    if keys != link.probe_keys:
        link = replace(link, probe_id=obj.position, probe_keys=keys, answers={})
    missing = [key for key in keys if key not in link.answers]
    return link, [JoinProbe(key=key, anchor=obj.key, probe_id=link.probe_id or obj.position, person=link.person or "")
                  for key in missing]


def _left(obj: SourceObject, person: str, hold_delete: bool = False) -> ConnectorState:
    return ConnectorState(person=person, anchor=obj.key, position=obj.position, connector=None, hold_delete=hold_delete)
