"""GAL provisioning, as MIM's GAL management agent exports it: one contact per person in the
central forest, built from the person's connectors in the user forests.

- A person who is a real user of the central forest gets no contact.
- The person's exportable sources are its mail-enabled users, groups and contacts of user
  forests (which kinds count is set per forest). Without a mail value there is no contact,
  unless the forest exports such objects, and then without mail and real-time communications.
- The contact lives in the contacts OU of the winning source forest (the best by the default
  precedence), is named after the person, and carries the templates' values.
- A contact that already exists in the central forest, made by hand or by an older engine, and
  joined to the person, is adopted rather than duplicated: the state names it (`adopt_dn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from streams.events import ContactState, ObjectKind
from streams.rules.dn import escape_value
from streams.rules.person import Connector, Person, Precedence, merged_values, ranked
from streams.rules.templates import Template

SIP_ATTRIBUTE_PREFIX = "msrtcsip-"
SIP_ADDRESS = "msrtcsip-primaryuseraddress"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportPolicy:
    """How one user forest's objects become contacts."""

    contacts_ou: str
    kinds: frozenset[ObjectKind] = frozenset({ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT})
    # Objects without mail: False leaves them out of the GAL; True exports them without mail and
    # without real-time communications (never SIP-enabled with no SIP address).
    without_mail: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GalPolicy:
    forests: Mapping[str, ExportPolicy]
    precedence: Precedence
    object_classes: tuple[str, ...]
    rdn_attribute: str
    rdn_source: str
    attributes: tuple[tuple[str, Template], ...]
    # Appended to the name when another person's contact holds the plain one, e.g. " ({mail})".
    clash_suffix: Template
    mail_attribute: str = "mail"


def desired_contact(person: Person, policy: GalPolicy) -> ContactState:
    """The contact the person should have: present with its values, or absent."""
    live = list(person.connectors.values())
    absent = ContactState(anchor=person.person_id, present=False, container_dn="")
    if any(c.central and c.kind is ObjectKind.USER and c.managed_for is None for c in live):
        return absent
    sources = [c for c in live if _exportable(c, policy)]
    if not sources:
        return absent
    values = merged_values(sources, policy.precedence)
    winner = ranked(sources, policy.precedence.ranking())[0]
    export = policy.forests[winner.forest]
    first = {name: vals[0] for name, vals in values.items() if vals}
    has_mail = bool(first.get(policy.mail_attribute.lower()))
    if not has_mail and not export.without_mail:
        return absent
    if not has_mail:
        first.pop(policy.mail_attribute.lower(), None)
    name = first.get(policy.rdn_source.lower())
    if not name:
        return absent
    attributes = {policy.rdn_attribute: (name,), **_rendered(policy, first)}
    suffix = policy.clash_suffix.render(first)
    ou = export.contacts_ou
    return ContactState(
        anchor=person.person_id,
        present=True,
        container_dn=ou,
        dn=_dn(policy.rdn_attribute, name, ou),
        fallback_dn=_dn(policy.rdn_attribute, name + suffix, ou) if suffix else None,
        adopt_dn=_adoptable(live, person.person_id),
        object_classes=policy.object_classes,
        attributes=attributes,
        managed_attributes=tuple(target for target, _ in policy.attributes),
    )


def _exportable(connector: Connector, policy: GalPolicy) -> bool:
    export = policy.forests.get(connector.forest)
    return (
        not connector.central
        and connector.managed_for is None
        and export is not None
        and connector.kind in export.kinds
    )


def _rendered(policy: GalPolicy, values: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    rendered = {}
    for target, template in policy.attributes:
        value = template.render(values)
        if value is not None:
            rendered[target] = (value,)
    if not any(name.lower() == SIP_ADDRESS for name in rendered):
        # Enablement without an address is what Communications Server rejects: all or nothing.
        rendered = {n: v for n, v in rendered.items() if not n.lower().startswith(SIP_ATTRIBUTE_PREFIX)}
    return rendered


def _adoptable(connectors: list[Connector], person_id: str) -> str | None:
    """A central contact joined to the person that idsync does not manage yet."""
    if any(c.central and c.managed_for == person_id for c in connectors):
        return None
    hand_made = sorted(c.dn for c in connectors if c.central and c.kind is ObjectKind.CONTACT and c.managed_for is None)
    return hand_made[0] if hand_made else None


def _dn(rdn_attribute: str, name: str, ou: str) -> str:
    return f"{rdn_attribute}={escape_value(name)},{ou}"
