"""Versioned events of the metaverse engine's internal topics (streams/processors/engine.py).

| topic | key | events |
| --- | --- | --- |
| ``<app_id>-join-claims`` | join key (``email:ada@x.org``) | join-claim, join-resolve, join-probe |
| ``<app_id>-links`` | source anchor (``forest/object_id``) | join-link, join-probe-answer |
| ``<app_id>-person-changes`` | person id | connector-state, central-barrier, export-all, delete-decision |
| ``<app_id>-delete-requests`` | person id, always partition 0 | delete-request, delete-withdrawn, delete-verdict |

Each is an orjson object with ``schema`` and ``version`` like every idsync event. Fields added
later with a default keep version 1: a decoder defaults what it misses and ignores what it does
not know, so old and new builds read each other's events.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, Mapping

from streams.events import EventDecodeError, check_schema, encode, parse
from streams.rules.join import Claim
from streams.rules.person import Connector


class FieldEvent:
    SCHEMA: str
    VERSION = 1

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | None):
        data = parse(raw)
        check_schema(data, cls)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The event from its fields, each converted by the type it is declared with."""
        values = {}
        try:
            for name, convert, required in _decoders(cls):
                if name in data:
                    values[name] = convert(data[name])
                elif required:
                    raise KeyError(name)
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


# Annotations are text (from __future__ import annotations): the ones these events use.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": str,
    "int": int,
    "bool": _strict_bool,
    "str | None": _optional(str),
    "dict | None": _optional(dict),
    "tuple[str, ...]": lambda value: tuple(str(v) for v in value),
}


def register_converter(annotation: str, convert: Callable[[Any], Any]) -> None:
    """How fields declared with `annotation` (its text) decode, for event modules beside this one."""
    _CONVERTERS[annotation] = convert


@functools.cache
def _decoders(kind: type) -> tuple[tuple[str, Callable[[Any], Any], bool], ...]:
    return tuple(
        (f.name, _CONVERTERS[f.type], f.default is MISSING and f.default_factory is MISSING) for f in fields(kind)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinClaim(FieldEvent):
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


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinResolve(FieldEvent):
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


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinProbe(FieldEvent):
    """A joined object's key checked against its person (registers a free key)."""

    SCHEMA = "idsync.join-probe"
    key: str
    anchor: str
    probe_id: str
    person: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinLink(FieldEvent):
    SCHEMA = "idsync.join-link"
    anchor: str
    claim_id: str
    person: str
    # Keys the claim settled on the person (added within v1; absent: every key is probed).
    settled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeAnswer(FieldEvent):
    SCHEMA = "idsync.join-probe-answer"
    anchor: str
    probe_id: str
    key: str
    # The key's person, or None while another object's claim holds it.
    owner: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorState(FieldEvent):
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


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralBarrier(FieldEvent):
    """Sent by each connector-space partition to every person partition once the central
    forest's initial state is folded in and every central object it holds is joined."""

    SCHEMA = "idsync.central-barrier"
    from_partition: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportAll(FieldEvent):
    """Sent by `idsync resync --rebuild` to every person partition: every person's contact is
    derived again with the rules in force (after a change of templates or precedence), and sent
    where it changed."""

    SCHEMA = "idsync.export-all"
    requested_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRequest(FieldEvent):
    SCHEMA = "idsync.delete-request"
    person: str
    request_id: str
    dn: str | None
    requested_at: str
    # Held whatever the window says (a sweep over the mass-delete guard).
    hold: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteWithdrawn(FieldEvent):
    """The person wants a contact again: a delete it asked for, if still held, is dropped."""

    SCHEMA = "idsync.delete-withdrawn"
    person: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVerdict(FieldEvent):
    """An operator's decision on held deletes (`persons` empty: every held one)."""

    SCHEMA = "idsync.delete-verdict"
    approve: bool
    persons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteDecision(FieldEvent):
    """The breaker's answer to one delete request, back on the person's partition."""

    SCHEMA = "idsync.delete-decision"
    person: str
    request_id: str
    approved: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict(FieldEvent):
    """A conflict idsync decided deterministically and reports until it is resolved at the source
    (compacted by `conflict_id`; `open` false: it is over)."""

    SCHEMA = "idsync.conflict"
    conflict_id: str
    kind: str
    open: bool
    reason: str
    parties: tuple[str, ...]
    at: str


_KINDS = {kind.SCHEMA: kind for kind in (
    JoinClaim, JoinResolve, JoinProbe, JoinLink, ProbeAnswer, ConnectorState, CentralBarrier, ExportAll,
    DeleteRequest, DeleteWithdrawn, DeleteVerdict, DeleteDecision,
)}


def register_engine_event(kind: type[FieldEvent]) -> type[FieldEvent]:
    """An event of another module (streams/site_events.py) that travels on the engine's topics."""
    _KINDS[kind.SCHEMA] = kind
    return kind


def decode_engine_event(raw: bytes | None):
    """Any event of the engine's internal topics; EventDecodeError says why not."""
    data = parse(raw)
    kind = _KINDS.get(data.get("schema"))
    if kind is None:
        raise EventDecodeError(f"unknown schema {data.get('schema')!r} on an engine topic")
    check_schema(data, kind)
    return kind.from_dict(data)
