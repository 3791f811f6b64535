"""Person sync's rules (seed 004), free of Kafka and faust.

- A site member's login resolves to the metaverse person that claims it: each person claims the
  logins its login rules render from its user objects (``{userPrincipalName}``,
  ``ALPHA\\{sAMAccountName}``, ``{mail}``...). One live claimant owns a login; two are a conflict
  and the login stays unresolved; with no live one, the person who departed last keeps it
  (flagged), so a departed user is still known by name and a returning one takes it back.
- The profile of a person (its row in the profile store) holds its logins, the replicable
  properties it sends down, the sites it is a member of with the properties each site holds,
  and whether it departed (no source left in any forest): departed persons get no writes.
- What to write to a site is what differs between the person's properties and the site's copy:
  a title change writes the title, and nothing when the site has it already.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.events import EventDecodeError, ObjectKind, check_schema, encode, parse
from streams.rules.person import Connector, Person, Precedence, merged_values
from streams.rules.templates import Template


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginRule:
    template: Template
    # Only source objects of these forests (None: every forest).
    forests: frozenset[str] | None = None

    def applies_to(self, forest: str) -> bool:
        return self.forests is None or forest in self.forests


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfilePolicy:
    logins: tuple[LoginRule, ...]
    # (metaverse attribute, site property), in the order of the topology.
    replicate: tuple[tuple[str, str], ...]


def sources(person: Person) -> list[Connector]:
    """The person's objects in the forests, without the contact idsync made for it."""
    return [c for c in person.connectors.values() if c.managed_for is None]


def person_logins(person: Person, policy: ProfilePolicy) -> tuple[str, ...]:
    """The logins the person's user objects answer to, casefolded, sorted."""
    found: set[str] = set()
    for connector in sources(person):
        if connector.kind is not ObjectKind.USER:
            continue
        first_values = {name: values[0] for name, values in connector.attributes.items() if values}
        for login_rule in policy.logins:
            if login_rule.applies_to(connector.forest) and (login := login_rule.template.render(first_values)):
                found.add(login.casefold())
    return tuple(sorted(found))


def replicable_values(person: Person, policy: ProfilePolicy, precedence: Precedence) -> dict[str, str]:
    """Site property -> value, by attribute-flow precedence; "" where no source has a value."""
    merged = merged_values(sources(person), precedence)
    return {prop: (merged.get(attribute.lower()) or ("",))[0] for attribute, prop in policy.replicate}


def property_diff(wanted: Mapping[str, str], held: Mapping[str, str]) -> dict[str, str]:
    """The wanted properties the site does not hold yet. A property the site lacks counts as ""."""
    return {name: value for name, value in wanted.items() if held.get(name, "") != value}


def person_version(person: Person) -> str:
    """Which state of the person this is: its sources' positions (and those that left)."""
    parts = sorted(f"{anchor}@{c.position}" for anchor, c in person.connectors.items())
    parts += sorted(f"{anchor}-{position}" for anchor, position in person.departed.items())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# --- the login index -----------------------------------------------------------------------


def login_owner(claims: Mapping[str, Mapping[str, str]]) -> tuple[str | None, tuple[str, ...]]:
    """The person a login resolves to, and the live claimants when more than one claims it
    (then it resolves to nobody). `claims`: person -> {"state": live|departed, "at": time}."""
    live = sorted(person for person, claim in claims.items() if claim["state"] == "live")
    if len(live) == 1:
        return live[0], ()
    if live:
        return None, tuple(live)
    departed = sorted(claims.items(), key=lambda item: (item[1].get("at", ""), item[0]))
    return (departed[-1][0] if departed else None), ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A person's row in the profile store."""

    SCHEMA = "idsync.site-profile"
    VERSION = 1

    person_id: str
    # Logins claimed, as sent on the login-claims topic.
    logins: tuple[str, ...] = ()
    # When the person was found to have no source left; None while it has one.
    departed_at: str | None = None
    # Site id (store/site) -> {"login": ..., "properties": the site's copy as the site reported
    # it, "pending": what was sent to the site since and the site has not reported yet}.
    memberships: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # person_version() of the person state whose writes were sent last: the same state coming
    # again is a re-delivery, whose writes may have been lost with a crash.
    synced_state: str = ""

    def with_membership(self, site_id: str, login: str, properties: Mapping[str, str]) -> Profile:
        """The site reported its copy: what it confirms is no longer pending."""
        pending = self.memberships.get(site_id, {}).get("pending", {})
        entry = {"login": login, "properties": dict(properties),
                 "pending": {k: v for k, v in pending.items() if properties.get(k, "") != v}}
        return replace(self, memberships={**self.memberships, site_id: entry})

    def with_sent(self, site_id: str, sent: Mapping[str, str]) -> Profile:
        entry = dict(self.memberships[site_id])
        entry["pending"] = {**entry.get("pending", {}), **sent}
        return replace(self, memberships={**self.memberships, site_id: entry})

    def without_membership(self, site_id: str) -> Profile:
        return replace(self, memberships={k: v for k, v in self.memberships.items() if k != site_id})

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Profile:
        data = parse(raw)
        check_schema(data, cls)
        try:
            return cls(
                person_id=str(data["person_id"]),
                logins=tuple(str(x) for x in data.get("logins", ())),
                departed_at=data.get("departed_at"),
                memberships={str(k): {"login": str(v["login"]), "properties": dict(v["properties"]),
                                      "pending": dict(v.get("pending", {}))}
                             for k, v in data.get("memberships", {}).items()},
                synced_state=str(data.get("synced_state", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginEntry:
    """One login in the login index: who claims it, whom it resolves to, and the sites that list
    it as a member (with the properties each holds)."""

    SCHEMA = "idsync.site-login"
    VERSION = 1

    login: str
    # Person -> {"state": live|departed, "at": ...}.
    claims: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Site id -> {"store", "site", "login" (as the site spells it), "token", "snapshot_id", "properties"}.
    memberships: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def owner(self) -> str | None:
        return login_owner(self.claims)[0]

    @property
    def owner_state(self) -> str | None:
        owner = self.owner
        return self.claims[owner]["state"] if owner is not None else None

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> LoginEntry:
        data = parse(raw)
        check_schema(data, cls)
        try:
            return cls(
                login=str(data["login"]),
                claims={str(k): {"state": str(v["state"]), "at": str(v.get("at", ""))}
                        for k, v in data.get("claims", {}).items()},
                memberships={str(k): dict(v) for k, v in data.get("memberships", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventDecodeError(f"{cls.SCHEMA}: {type(exc).__name__}: {exc}") from exc


def site_counts(entries: Iterable[LoginEntry]) -> dict[str, dict[str, int]]:
    """Per site id: members, resolved, unresolved and flagged (resolved to a departed person)."""
    counts: dict[str, dict[str, int]] = {}
    for entry in entries:
        state = entry.owner_state
        for site_id in entry.memberships:
            site = counts.setdefault(site_id, {"members": 0, "resolved": 0, "unresolved": 0, "flagged": 0})
            site["members"] += 1
            site["unresolved" if state is None else "resolved"] += 1
            site["flagged"] += state == "departed"
    return counts
