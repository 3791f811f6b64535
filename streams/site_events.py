"""Versioned events about site collections' membership lists (person sync, issue #10).

Same conventions as streams/events.py: frozen dataclasses, orjson with ``schema`` and ``version``,
explicit decoding that raises EventDecodeError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from streams.events import EventDecodeError, check_schema, parse

Properties = Mapping[str, str]


class MembershipOp(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    PROPERTIES_CHANGED = "properties-changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteMembershipChange:
    """One entry of a site's change log: a member added or removed, or the site's copy of a
    member's profile properties changed. `change_token` is the store's opaque resume position
    just after this change."""

    SCHEMA = "idsync.site-membership-change"
    VERSION = 1

    site: str
    member_login: str
    op: MembershipOp
    change_token: str
    # ISO 8601, UTC, as the store recorded it.
    changed_at: str
    # The member's properties as the site holds them after the change (empty for REMOVED).
    properties: Properties

    def key(self) -> str:
        return f"{self.site}/{self.member_login}"

    def to_bytes(self) -> bytes:
        header = {"schema": self.SCHEMA, "version": self.VERSION}
        return orjson.dumps(header | {
            "site": self.site, "member_login": self.member_login, "op": self.op, "change_token": self.change_token,
            "changed_at": self.changed_at, "properties": dict(self.properties),
        })

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SiteMembershipChange:
        return cls.from_dict(parse(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiteMembershipChange:
        check_schema(data, cls)
        try:
            properties = data.get("properties") or {}
            if not isinstance(properties, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
            ):
                raise TypeError("'properties' must be an object of strings")
            return cls(
                site=_text(data, "site"),
                member_login=_text(data, "member_login"),
                op=MembershipOp(data["op"]),
                change_token=_text(data, "change_token"),
                changed_at=_text(data, "changed_at"),
                properties=dict(properties),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name!r} must be a non-empty string")
    return value
