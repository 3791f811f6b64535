"""GAL provisioning rule: a user in a user forest => a contact in the central forest.

The contact lives in the OU that the topology gives the user's forest, is named after the
user (``rdn_source``), carries the mapped attributes and the real-time-communications
enablement, and is tagged with an anchor (``forest/object_id``) so the writer can find it
again whatever its name has become.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from ldap3.utils.dn import escape_rdn

from streams.config.topology import ContactPolicy, Topology
from streams.events import ANCHOR_ATTRIBUTE, ContactState, ObjectKind
from streams.rules.metaverse import SourceObject


class ProvisioningError(ValueError):
    """The object cannot become a contact; the reason goes to the error topic."""


def desired_contact(obj: SourceObject, topology: Topology) -> ContactState | None:
    """The contact this object should have, or None when it concerns no contact."""
    forest = next((f for f in topology.user_forests if f.name == obj.forest), None)
    if forest is None or forest.contacts_ou is None:
        return None
    policy = topology.contacts
    if obj.deleted:
        if obj.kind is not ObjectKind.USER:
            return None
        return ContactState(anchor=obj.key, present=False, container_dn=forest.contacts_ou)
    if obj.kind is not ObjectKind.USER or obj.created_by_idsync or ANCHOR_ATTRIBUTE.lower() in obj.attributes:
        # An entry idsync wrote (created by a writer account, or carrying the anchor), read back
        # through a forest whose scope overlaps what idsync writes, must never become a person
        # again: that would be a replication loop.
        return None
    values = FirstValues(obj.attributes)
    name = values.get(policy.rdn_source)
    if not name:
        raise ProvisioningError(
            f"user {obj.dn!r} has no {policy.rdn_source!r} value to name its contact"
        )
    return ContactState(
        anchor=obj.key,
        present=True,
        container_dn=forest.contacts_ou,
        dn=f"{policy.rdn_attribute}={escape_rdn(name)},{forest.contacts_ou}",
        object_classes=policy.object_classes,
        # The naming value is written on creation; later the writer changes it by renaming.
        attributes={policy.rdn_attribute: (name,), **dict(_rendered(policy, values))},
        managed_attributes=tuple(target for target, _ in policy.attributes),
    )


def _rendered(policy: ContactPolicy, values: Mapping[str, str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    for target, template in policy.attributes:
        value = template.render(values)
        if value is not None:
            yield target, (value,)


class FirstValues(Mapping[str, str]):
    """Case-insensitive view of an object's attributes, first value of each."""

    __slots__ = ("_attributes",)

    def __init__(self, attributes: Mapping[str, tuple[str, ...]]) -> None:
        self._attributes = attributes

    def __getitem__(self, name: str) -> str:
        values = self._attributes[name.lower()]
        if not values:
            raise KeyError(name)
        return values[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)
