"""The contact writer's decisions, given the entries it found (connectors/ldap/contact_plan.py)."""

from __future__ import annotations

import pytest

from connectors.ldap.contact_plan import Entry, plan_contact, same_name
from streams.contracts import Blocked
from streams.events import ANCHOR_ATTRIBUTE, ContactState
from streams.rules.dn import escape_value

OU = "ou=forest-a,ou=Contacts,dc=central,dc=test"
CONTACT = frozenset({"top", "person", "organizationalperson", "contact"})
USER = frozenset({"top", "person", "organizationalperson", "inetorgperson"})


def dn(name: str, ou: str = OU) -> str:
    return f"cn={escape_value(name)},{ou}"


def state(name: str = "Ada Lovelace", *, mail: str | None = "ada@x.org", fallback: bool = True, **fields) -> ContactState:
    attributes = {"cn": (name,), "displayName": (name,)}
    if mail:
        attributes["mail"] = (mail,)
    defaults = dict(
        anchor="person-1", present=True, container_dn=OU, dn=dn(name),
        fallback_dn=dn(f"{name} ({mail})") if fallback and mail else None,
        object_classes=("top", "person", "organizationalPerson", "contact"),
        attributes=attributes, managed_attributes=("displayName", "mail"),
    )
    return ContactState(**(defaults | fields))


def entry(at: str, *, anchor: str | None = None, classes=CONTACT, **attributes: str) -> Entry:
    return Entry(dn=at, anchor=anchor, object_classes=classes,
                 attributes={name.lower(): (value,) for name, value in attributes.items()})


class Directory:
    """The entries at each name, and which names the plan looked up."""

    def __init__(self, *entries: Entry) -> None:
        self.entries = list(entries)
        self.asked: list[str] = []

    def __call__(self, name: str) -> Entry | None:
        self.asked.append(name)
        return next((e for e in self.entries if same_name(e.dn, name)), None)


def test_a_name_the_directory_escapes_differently_is_not_renamed_and_nothing_is_looked_up() -> None:
    name = 'Smith, Ada + "B" \\ #1'
    wanted = state(name, attributes={"cn": (name,), "displayName": ("New",), "mail": ("ada@x.org",)})
    # As slapd returns it: hex escapes where idsync wrote backslash-character pairs.
    own = entry(r"cn=Smith\2C Ada \2B \22B\22 \5C #1," + OU.upper().replace("OU=", "ou="), anchor="person-1",
                displayName="Old", mail="ada@x.org")
    directory = Directory()
    plan = plan_contact(wanted, own, directory)
    assert plan.target is None and plan.blocked is None and not plan.adopt
    assert plan.changes == {"displayName": ("New",)}
    assert directory.asked == []


def test_a_change_of_case_in_the_name_is_a_rename() -> None:
    own = entry(dn("ada lovelace"), anchor="person-1", displayName="Ada Lovelace", mail="ada@x.org")
    plan = plan_contact(state(), own, Directory(own))
    assert plan.target == dn("Ada Lovelace")


def test_unchanged_contact_needs_no_write() -> None:
    own = entry(dn("Ada Lovelace"), anchor="person-1", displayName="Ada Lovelace", mail="ada@x.org")
    plan = plan_contact(state(), own, Directory(own))
    assert plan.target is None and plan.changes == {} and plan.blocked is None


def test_new_contact_is_created_at_its_name() -> None:
    plan = plan_contact(state(), None, Directory())
    assert plan.entry is None and plan.target == dn("Ada Lovelace") and plan.blocked is None


def test_contact_named_by_adopt_dn_is_taken_over_and_renamed() -> None:
    hand_made = entry(dn("Lovelace, Ada (Sales)"), displayName="Ada L.", mail="old@x.org")
    plan = plan_contact(state(adopt_dn=hand_made.dn), None, Directory(hand_made))
    assert plan.entry == hand_made and plan.adopt
    assert plan.target == dn("Ada Lovelace")
    assert plan.changes == {"displayName": ("Ada Lovelace",), "mail": ("ada@x.org",), ANCHOR_ATTRIBUTE: ("person-1",)}


def test_adopt_dn_of_another_persons_contact_is_not_taken() -> None:
    theirs = entry(dn("Lovelace, Ada (Sales)"), anchor="person-2")
    plan = plan_contact(state(adopt_dn=theirs.dn), None, Directory(theirs))
    assert not plan.adopt and plan.entry is None and plan.target == dn("Ada Lovelace")


def test_adopt_dn_that_is_gone_creates_the_contact() -> None:
    plan = plan_contact(state(adopt_dn=dn("Gone")), None, Directory())
    assert plan.entry is None and plan.target == dn("Ada Lovelace")


@pytest.mark.parametrize("mail", [None, "ada@x.org", "ADA@X.org"])
def test_hand_made_contact_with_the_same_name_and_no_other_mail_is_adopted_in_place(mail: str | None) -> None:
    hand_made = entry(dn("Ada Lovelace"), **({"mail": mail} if mail else {}))
    plan = plan_contact(state(), None, Directory(hand_made))
    assert plan.adopt and plan.entry == hand_made and plan.target is None
    assert plan.changes[ANCHOR_ATTRIBUTE] == ("person-1",)


def test_hand_made_contact_under_the_fallback_name_is_adopted_in_place() -> None:
    hand_made = entry(dn("Ada Lovelace (ada@x.org)"))
    other = entry(dn("Ada Lovelace"), anchor="person-2")
    plan = plan_contact(state(), None, Directory(other, hand_made))
    assert plan.adopt and plan.entry == hand_made and plan.target is None and plan.blocked is None


def test_hand_made_contact_with_another_mail_blocks_the_name() -> None:
    hand_made = entry(dn("Ada Lovelace"), mail="someone.else@x.org")
    plan = plan_contact(state(), None, Directory(hand_made))
    assert plan.entry is None and plan.target is None
    assert plan.blocked == Blocked(reason="the name is held by a contact idsync does not manage, with another mail",
                                   dn=dn("Ada Lovelace"), blocker_dn=hand_made.dn)


def test_user_holding_the_name_blocks_the_contact_even_with_a_free_fallback_name() -> None:
    user = entry(dn("Ada Lovelace"), classes=USER)
    plan = plan_contact(state(), None, Directory(user))
    assert plan.entry is None and plan.target is None
    assert plan.blocked is not None and plan.blocked.blocker_dn == user.dn and plan.blocked.dn == dn("Ada Lovelace")
    assert "inetorgperson" in plan.blocked.reason


def test_another_persons_contact_holding_the_name_gives_the_fallback_name() -> None:
    other = entry(dn("Ada Lovelace"), anchor="person-2")
    plan = plan_contact(state(), None, Directory(other))
    assert plan.entry is None and plan.target == dn("Ada Lovelace (ada@x.org)") and plan.blocked is None


def test_fallback_name_held_by_a_foreign_entry_blocks() -> None:
    other = entry(dn("Ada Lovelace"), anchor="person-2")
    user = entry(dn("Ada Lovelace (ada@x.org)"), classes=USER)
    plan = plan_contact(state(), None, Directory(other, user))
    assert plan.blocked is not None and plan.blocked.dn == user.dn and plan.blocked.blocker_dn == user.dn


def test_another_persons_contact_and_no_fallback_name_blocks() -> None:
    other = entry(dn("Ada Lovelace"), anchor="person-2")
    plan = plan_contact(state(fallback=False), None, Directory(other))
    assert plan.blocked is not None and plan.blocked.blocker_dn == other.dn


def test_contact_under_its_fallback_name_stays_while_the_name_is_held() -> None:
    own = entry(dn("Ada Lovelace (ada@x.org)"), anchor="person-1", displayName="Ada Lovelace", mail="ada@x.org")
    for holder in (entry(dn("Ada Lovelace"), anchor="person-2"), entry(dn("Ada Lovelace"), classes=USER)):
        plan = plan_contact(state(), own, Directory(own, holder))
        assert plan.target is None and plan.blocked is None and plan.changes == {}


def test_contact_under_its_fallback_name_takes_its_name_once_free() -> None:
    own = entry(dn("Ada Lovelace (ada@x.org)"), anchor="person-1", displayName="Ada Lovelace", mail="ada@x.org")
    plan = plan_contact(state(), own, Directory(own))
    assert plan.target == dn("Ada Lovelace")


def test_rename_to_a_held_name_is_blocked_but_attributes_are_still_written() -> None:
    own = entry(dn("Ada Byron"), anchor="person-1", displayName="Ada Byron", mail="ada@x.org")
    user = entry(dn("Ada Lovelace"), classes=USER)
    plan = plan_contact(state(), own, Directory(own, user))
    assert plan.entry == own and plan.target is None
    assert plan.changes == {"displayName": ("Ada Lovelace",)}
    assert plan.blocked is not None and plan.blocked.blocker_dn == user.dn


def test_move_to_another_container_is_a_rename_but_a_change_of_case_in_the_container_is_not() -> None:
    own = entry(dn("Ada Lovelace", OU.upper().replace("CN=", "cn=")), anchor="person-1",
                displayName="Ada Lovelace", mail="ada@x.org")
    assert plan_contact(state(), own, Directory(own)).target is None
    moved = state(dn=dn("Ada Lovelace", "ou=forest-b,ou=Contacts,dc=central,dc=test"), fallback=False)
    assert plan_contact(moved, own, Directory(own)).target == moved.dn


def test_attribute_names_compare_ignoring_case_and_values_ignoring_order() -> None:
    own = Entry(dn=dn("Ada Lovelace"), anchor="person-1", object_classes=CONTACT,
                attributes={"displayname": ("Ada Lovelace",), "mail": ("ada@x.org",),
                            "proxyaddresses": ("smtp:b@x.org", "SMTP:ada@x.org")})
    wanted = state(attributes={"cn": ("Ada Lovelace",), "displayName": ("Ada Lovelace",), "mail": ("ada@x.org",),
                               "proxyAddresses": ("SMTP:ada@x.org", "smtp:b@x.org")},
                   managed_attributes=("displayName", "mail", "proxyAddresses", "mobile"))
    assert plan_contact(wanted, own, Directory(own)).changes == {}
