"""Sample people for the embedded demo: a few users in each user forest (one person in both),
and a contact made by hand in the central forest before idsync ran."""

from __future__ import annotations

from dataclasses import dataclass

import ldap3
from ldap3.core.exceptions import LDAPEntryAlreadyExistsResult
from ldap3.utils.dn import escape_rdn


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleUser:
    uid: str
    given_name: str
    surname: str
    domain: str

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.surname}"

    def dn(self, people_ou: str) -> str:
        return f"uid={escape_rdn(self.uid)},{people_ou}"

    def attributes(self) -> dict[str, list[str]]:
        return {
            "uid": [self.uid],
            "cn": [self.display_name],
            "sn": [self.surname],
            "givenName": [self.given_name],
            "displayName": [self.display_name],
            "mail": [f"{self.uid}@{self.domain}"],
        }


SAMPLE_USERS: dict[str, tuple[SampleUser, ...]] = {
    "forest-a": (
        SampleUser(uid="ada.lovelace", given_name="Ada", surname="Lovelace", domain="forest-a.example"),
        SampleUser(uid="alan.turing", given_name="Alan", surname="Turing", domain="forest-a.example"),
        SampleUser(uid="grace.hopper", given_name="Grace", surname="Hopper", domain="forest-a.example"),
    ),
    "forest-b": (
        SampleUser(uid="edsger.dijkstra", given_name="Edsger", surname="Dijkstra", domain="forest-b.example"),
        # The same person as forest-a's Ada (same mail): one metaverse person, one contact.
        SampleUser(uid="ada.lovelace", given_name="Ada", surname="Lovelace", domain="forest-a.example"),
        SampleUser(uid="barbara.liskov", given_name="Barbara", surname="Liskov", domain="forest-b.example"),
    ),
}


# A contact an older GAL sync left in forest-a's contacts OU, under another name: adopted, not doubled.
HAND_MADE_CONTACT = {"cn": "Grace Hopper (old GAL)", "sn": "Hopper", "mail": "grace.hopper@forest-a.example"}


def persons(users: dict[str, tuple[SampleUser, ...]]) -> int:
    """How many people the users are: one per mail, as the metaverse joins them."""
    return len({user.attributes()["mail"][0].lower() for forest in users.values() for user in forest})


def ensure_ou(connection: ldap3.Connection, dn: str) -> None:
    try:
        connection.add(dn, ["top", "organizationalUnit"])
    except LDAPEntryAlreadyExistsResult:
        pass
    else:
        if connection.result["result"] not in (0, 68):
            raise RuntimeError(f"cannot create {dn}: {connection.result['description']}")


def add_user(connection: ldap3.Connection, people_ou: str, user: SampleUser) -> str:
    dn = user.dn(people_ou)
    if not connection.add(dn, ["top", "person", "organizationalPerson", "inetOrgPerson"], user.attributes()):
        raise RuntimeError(f"cannot add {dn}: {connection.result['description']} {connection.result['message']}")
    return dn
