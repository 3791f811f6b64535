"""Metaverse persons: the source objects joined to one person (its connectors) and the values
the person takes from them by attribute-flow precedence.

A person is keyed by its id (streams/rules/join.py mints it); its connectors travel to the
person's partition as ConnectorState events and are kept here whole, so precedence can fall
back to a lower source the moment the winning one loses a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from streams.events import EventDecodeError, ObjectKind, check_schema, encode, parse


@dataclass(frozen=True, slots=True, kw_only=True)
class Connector:
    """A source object joined to a person, as the person's partition knows it."""

    anchor: str
    forest: str
    central: bool
    kind: ObjectKind
    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    position: str
    # For a contact idsync manages: the person id it carries in its anchor attribute.
    managed_for: str | None = None
    # The source object's changed_at (see SourceObject): only for the latency metric.
    changed_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor, "forest": self.forest, "central": self.central, "kind": str(self.kind),
            "dn": self.dn, "attributes": {k: list(v) for k, v in self.attributes.items()},
            "position": self.position, "managed_for": self.managed_for, "changed_at": self.changed_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Connector:
        return cls(
            anchor=str(data["anchor"]), forest=str(data["forest"]), central=bool(data["central"]),
            kind=ObjectKind(data["kind"]), dn=str(data["dn"]),
            attributes={str(k): tuple(str(x) for x in v) for k, v in data.get("attributes", {}).items()},
            position=str(data["position"]), managed_for=data.get("managed_for"),
            changed_at=data.get("changed_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """One person of the metaverse; stored in the persons table under its id."""

    SCHEMA = "idsync.metaverse-person"
    VERSION = 1

    person_id: str
    connectors: Mapping[str, Connector] = field(default_factory=dict)
    # Positions of connectors that left (deleted, or disconnected), so that a late re-delivery
    # of an older state cannot bring them back.
    departed: Mapping[str, str] = field(default_factory=dict)
    # What was last sent for the person's contact: "present", "absent", or "" (nothing yet).
    exported: str = ""

    def with_connector(self, connector: Connector) -> Person | None:
        """The person with this connector's newer state; None when it is not newer."""
        if not self._newer(connector.anchor, connector.position):
            return None
        departed = {k: v for k, v in self.departed.items() if k != connector.anchor}
        return replace(self, connectors={**self.connectors, connector.anchor: connector}, departed=departed)

    def without_connector(self, anchor: str, position: str) -> Person | None:
        """The person without this connector; None when that is no news. A departure may carry
        the position of the connector's last state: a sweep removes an object as it was."""
        known = self.connectors.get(anchor)
        if known is not None and position < known.position:
            return None
        if known is None and not self._newer(anchor, position):
            return None
        connectors = {k: v for k, v in self.connectors.items() if k != anchor}
        return replace(self, connectors=connectors, departed={**self.departed, anchor: position})

    def _newer(self, anchor: str, position: str) -> bool:
        known = self.connectors.get(anchor)
        last = known.position if known is not None else self.departed.get(anchor)
        return last is None or position > last

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Person:
        data = parse(raw)
        check_schema(data, cls)
        try:
            return cls(
                person_id=str(data["person_id"]),
                connectors={k: Connector.from_dict(v) for k, v in data["connectors"].items()},
                departed={str(k): str(v) for k, v in data.get("departed", {}).items()},
                exported=str(data.get("exported", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Precedence:
    """Per metaverse attribute (lower-cased), the source forests best first; `default` ranks the
    forests for every other attribute and for which forest's OU holds the contact. Forests that
    a list does not name come after the named ones, in `default` order."""

    default: tuple[str, ...]
    per_attribute: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def ranking(self, attribute: str | None = None) -> tuple[str, ...]:
        named = self.per_attribute.get(attribute.lower(), ()) if attribute else ()
        return tuple(dict.fromkeys((*named, *self.default)))


def ranked(connectors: Iterable[Connector], forests: Sequence[str]) -> list[Connector]:
    """Connectors best first: by the forests' rank, then by anchor (two objects of one forest
    joined to one person are a conflict; the outcome must not depend on arrival order)."""
    order = {forest: index for index, forest in enumerate(forests)}
    return sorted(connectors, key=lambda c: (order.get(c.forest, len(order)), c.anchor))


def merged_values(connectors: Sequence[Connector], precedence: Precedence) -> dict[str, tuple[str, ...]]:
    """Each attribute from the best-ranked connector that has a value for it."""
    names = {name for connector in connectors for name in connector.attributes}
    merged: dict[str, tuple[str, ...]] = {}
    for name in sorted(names):
        for connector in ranked(connectors, precedence.ranking(name)):
            values = connector.attributes.get(name)
            if values:
                merged[name] = values
                break
    return merged


def newest_change(connectors: Iterable[Connector]) -> str | None:
    """The latest changed_at among the connectors (readers write ISO 8601 in UTC, with a Z or
    +00:00 and varying fractions, so they are compared as times); None when none carries one."""
    times = [(parse_time(c.changed_at), c.changed_at) for c in connectors if c.changed_at]
    times = [(t, text) for t, text in times if t is not None]
    return max(times)[1] if times else None


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone); None when unreadable."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def same_forest_duplicates(connectors: Iterable[Connector]) -> dict[str, list[str]]:
    """Forests with more than one source object joined to the person: a join conflict."""
    by_forest: dict[str, list[str]] = {}
    for connector in connectors:
        if connector.managed_for is None:
            by_forest.setdefault(connector.forest, []).append(connector.anchor)
    return {forest: sorted(anchors) for forest, anchors in by_forest.items() if len(anchors) > 1}
