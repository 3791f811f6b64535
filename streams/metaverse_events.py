"""Versioned events of the metaverse engine's internal topics (streams/processors/engine.py).

| topic | key | events |
| --- | --- | --- |
| ``<app_id>-join-claims`` | join key (``email:ada@x.org``) | join-claim, join-resolve, join-probe |
| ``<app_id>-links`` | source anchor (``forest/object_id``) | join-link, join-probe-answer |
| ``<app_id>-person-changes`` | person id | connector-state, central-barrier, delete-decision |
| ``<app_id>-delete-requests`` | person id, always partition 0 | delete-request, delete-verdict |

Each is an orjson object with ``schema`` and ``version`` like every idsync event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from streams.events import EventDecodeError, check_schema, encode, parse
from streams.rules.join import Claim
from streams.rules.person import Connector


class _Event:
    SCHEMA: str
    VERSION = 1

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None):
        data = parse(raw)
        check_schema(data, cls)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinClaim(_Event):
    SCHEMA = "idsync.join-claim"
    anchor: str
    claim_id: str
    keys: tuple[str, ...]
    step: int

    @property
    def claim(self) -> Claim:
        return Claim(anchor=self.anchor, claim_id=self.claim_id, keys=self.keys, step=self.step)

    @classmethod
    def of(cls, claim: Claim) -> JoinClaim:
        return cls(anchor=claim.anchor, claim_id=claim.claim_id, keys=claim.keys, step=claim.step)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinClaim:
        return cls.of(Claim.from_dict(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinResolve(_Event):
    """Gives `key` (a key the claim led on its way) its person."""

    SCHEMA = "idsync.join-resolve"
    key: str
    anchor: str
    claim_id: str
    keys: tuple[str, ...]
    step: int
    person: str

    @property
    def claim(self) -> Claim:
        return Claim(anchor=self.anchor, claim_id=self.claim_id, keys=self.keys, step=self.step)

    @classmethod
    def of(cls, key: str, claim: Claim, person: str) -> JoinResolve:
        return cls(key=key, anchor=claim.anchor, claim_id=claim.claim_id, keys=claim.keys, step=claim.step, person=person)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinResolve:
        return cls.of(str(data["key"]), Claim.from_dict(data), str(data["person"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinProbe(_Event):
    """A joined object's key checked against its person (registers a free key)."""

    SCHEMA = "idsync.join-probe"
    key: str
    anchor: str
    probe_id: str
    person: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinProbe:
        return cls(key=str(data["key"]), anchor=str(data["anchor"]), probe_id=str(data["probe_id"]), person=str(data["person"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinLink(_Event):
    SCHEMA = "idsync.join-link"
    anchor: str
    claim_id: str
    person: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinLink:
        return cls(anchor=str(data["anchor"]), claim_id=str(data["claim_id"]), person=str(data["person"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeAnswer(_Event):
    SCHEMA = "idsync.join-probe-answer"
    anchor: str
    probe_id: str
    key: str
    # The key's person, or None while another object's claim holds it.
    owner: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeAnswer:
        return cls(anchor=str(data["anchor"]), probe_id=str(data["probe_id"]), key=str(data["key"]), owner=data.get("owner"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorState(_Event):
    """A source object's state for its person; `connector` None: it left the person."""

    SCHEMA = "idsync.connector-state"
    person: str
    anchor: str
    position: str
    connector: dict | None
    # Left through a sweep over the mass-delete guard: a contact delete that follows is held for an
    # operator whatever the breaker's window says.
    hold_delete: bool = False

    @property
    def joined(self) -> Connector | None:
        return Connector.from_dict(self.connector) if self.connector is not None else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConnectorState:
        connector = data.get("connector")
        return cls(person=str(data["person"]), anchor=str(data["anchor"]), position=str(data["position"]),
                   connector=dict(connector) if connector is not None else None,
                   hold_delete=data.get("hold_delete") is True)


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralBarrier(_Event):
    """Sent by each connector-space partition to every person partition once the central
    forest's initial state is folded in and every central object it holds is joined."""

    SCHEMA = "idsync.central-barrier"
    from_partition: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CentralBarrier:
        return cls(from_partition=int(data["from_partition"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRequest(_Event):
    SCHEMA = "idsync.delete-request"
    person: str
    request_id: str
    dn: str | None
    requested_at: str
    # Held whatever the window says (a sweep over the mass-delete guard).
    hold: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeleteRequest:
        return cls(person=str(data["person"]), request_id=str(data["request_id"]), dn=data.get("dn"),
                   requested_at=str(data["requested_at"]), hold=data.get("hold") is True)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVerdict(_Event):
    """An operator's decision on held deletes (`persons` empty: every held one)."""

    SCHEMA = "idsync.delete-verdict"
    approve: bool
    persons: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeleteVerdict:
        return cls(approve=bool(data["approve"]), persons=tuple(str(p) for p in data.get("persons", ())))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteDecision(_Event):
    """The breaker's answer to one delete request, back on the person's partition."""

    SCHEMA = "idsync.delete-decision"
    person: str
    request_id: str
    approved: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeleteDecision:
        return cls(person=str(data["person"]), request_id=str(data["request_id"]), approved=bool(data["approved"]))


_KINDS = {kind.SCHEMA: kind for kind in (
    JoinClaim, JoinResolve, JoinProbe, JoinLink, ProbeAnswer, ConnectorState, CentralBarrier,
    DeleteRequest, DeleteVerdict, DeleteDecision,
)}


def decode_engine_event(raw: bytes | None):
    """Any event of the engine's internal topics; EventDecodeError says why not."""
    data = parse(raw)
    kind = _KINDS.get(data.get("schema"))
    if kind is None:
        raise EventDecodeError(f"unknown schema {data.get('schema')!r} on an engine topic")
    check_schema(data, kind)
    try:
        return kind.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"{kind.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict(_Event):
    """A conflict idsync decided deterministically and reports until it is resolved at the source
    (compacted by `conflict_id`; `open` false: it is over)."""

    SCHEMA = "idsync.conflict"
    conflict_id: str
    kind: str
    open: bool
    reason: str
    parties: tuple[str, ...]
    at: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conflict:
        return cls(conflict_id=str(data["conflict_id"]), kind=str(data["kind"]), open=bool(data["open"]),
                   reason=str(data["reason"]), parties=tuple(str(p) for p in data["parties"]), at=str(data["at"]))
