"""Join rules: which normalized values tie a source object to a metaverse person, and the join
index that decides, one key at a time, which person a value belongs to.

Keys are ``<space>:<value>`` strings, e.g. ``email:ada@example.org``. Every claim for one key
is handled by the one partition that owns the key, so claims for a value are serialized there
(the way Kafka Streams routes a foreign-key join through a topic keyed by the foreign key).

An object that is not joined yet *claims* its keys as a chain, in one global order (rule order,
then value). At each key of the chain:
- the key has an owner (a person): the object joins that person; the keys it held on the way
  get that owner too;
- another claim leads the key (it is on its way down its own chain): this claim parks behind it
  and gets the leader's answer, since a shared value means a shared person;
- otherwise the claim leads the key and moves on to the next one; past the last key it projects
  a new person, whose id derives from the object's anchor (a replay mints the same id).
Claims take keys in one global order, like locks taken in one order, so two chains never wait
for each other. The functions here are pure: they return the new key state and the messages to
send; streams/processors does the sending.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

import orjson

PERSON_NAMESPACE = uuid.UUID("6f1e2c1a-43a1-4f7e-9a53-2b7cbe6c5d10")


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRule:
    """One join rule: the values of `attribute` (optionally only those with `prefix`, which is
    then stripped) meet in key space `space`; rules sharing a space match each other's values."""

    attribute: str
    space: str
    prefix: str | None = None

    def values(self, attributes: Mapping[str, tuple[str, ...]]) -> list[str]:
        found = []
        for raw in attributes.get(self.attribute.lower(), ()):
            value = raw.strip()
            if self.prefix is not None:
                if value[: len(self.prefix)].lower() != self.prefix.lower():
                    continue
                value = value[len(self.prefix):]
            elif value[:5].lower() == "smtp:":
                value = value[5:]
            value = value.strip().casefold()
            if value:
                found.append(value)
        return found


def join_keys(rules: Iterable[JoinRule], attributes: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The object's keys in the global chain order: by the first rule of each key space, then by
    value; each key once."""
    rank: dict[str, int] = {}
    ordered: list[tuple[int, str, str]] = []
    for rule in rules:
        rank.setdefault(rule.space, len(rank))
        for value in rule.values(attributes):
            ordered.append((rank[rule.space], rule.space, value))
    return tuple(dict.fromkeys(f"{space}:{value}" for _, space, value in sorted(ordered)))


def projected_person(anchor: str) -> str:
    """The id of the person an object projects: stable for the object, unique across objects."""
    return str(uuid.uuid5(PERSON_NAMESPACE, anchor))


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An object asking, at step `step` of its chain `keys`, which person it belongs to."""

    anchor: str
    claim_id: str
    keys: tuple[str, ...]
    step: int

    @property
    def key(self) -> str:
        return self.keys[self.step]

    @classmethod
    def from_dict(cls, data: Mapping) -> Claim:
        return cls(anchor=str(data["anchor"]), claim_id=str(data["claim_id"]), keys=tuple(data["keys"]), step=int(data["step"]))

    def same(self, other: Claim | None) -> bool:
        return other is not None and (other.anchor, other.claim_id) == (self.anchor, self.claim_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyState:
    """What the join index holds for one key."""

    owner: str | None = None
    leader: Claim | None = None
    parked: tuple[Claim, ...] = ()

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyState:
        data = orjson.loads(raw)
        leader = data.get("leader")
        return cls(
            owner=data.get("owner"),
            leader=Claim.from_dict(leader) if leader else None,
            parked=tuple(Claim.from_dict(p) for p in data.get("parked", ())),
        )


# Messages the index sends. `Forward` continues a chain at its next key, `Resolve` gives an
# earlier key of a chain its owner, `Link` answers the object.
@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    claim: Claim


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolve:
    key: str
    claim: Claim
    person: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    anchor: str
    claim_id: str
    person: str
    # The keys the chain went through, up to where it stopped: the person's now (no probe needed).
    settled: tuple[str, ...] = ()


Message = Forward | Resolve | Link


def on_claim(state: KeyState, claim: Claim) -> tuple[KeyState, list[Message]]:
    """A claim reached its key. Re-delivered claims send their messages again (whatever was
    sent before a crash may not have reached Kafka) and change nothing."""
    if state.owner is not None:
        return state, _answer(claim, state.owner)
    if claim.same(state.leader):
        return state, _lead_on(claim)
    if any(claim.same(parked) for parked in state.parked):
        return state, []
    if state.leader is not None:
        return replace(state, parked=state.parked + (claim,)), []
    if claim.step + 1 < len(claim.keys):
        return replace(state, leader=claim), _lead_on(claim)
    person = projected_person(claim.anchor)
    return replace(state, owner=person), _answer(claim, person)


def on_resolve(state: KeyState, message: Resolve) -> tuple[KeyState, list[Message]]:
    """The chain this key's leader went down has its person: the key is that person's, and the
    claims parked behind the leader join it too."""
    if not message.claim.same(state.leader):
        return state, []  # re-delivered: the key was resolved already
    messages: list[Message] = []
    for parked in state.parked:
        messages.extend(_answer(parked, message.person))
    return KeyState(owner=message.person), messages


def on_probe(state: KeyState, person: str) -> tuple[KeyState, str | None]:
    """A joined object's key checked against its person: a free key becomes the person's (so a
    later object with only this value joins the person too). Returns the key's owner."""
    if state.owner is None and state.leader is None:
        return KeyState(owner=person), person
    return state, state.owner


def _lead_on(claim: Claim) -> list[Message]:
    return [Forward(claim=replace(claim, step=claim.step + 1))]


def _answer(claim: Claim, person: str) -> list[Message]:
    """The claim joins `person`: the keys it leads on its way get that owner, the object its link."""
    earlier = [Resolve(key=key, claim=replace(claim, step=index), person=person) for index, key in enumerate(claim.keys[: claim.step])]
    settled = claim.keys[: claim.step + 1]
    return [*earlier, Link(anchor=claim.anchor, claim_id=claim.claim_id, person=person, settled=settled)]
