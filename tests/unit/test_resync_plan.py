"""The resync's plan: what it takes for the central forest to match the desired contact states."""

from __future__ import annotations

import io

from connectors.ldap.contact_plan import Entry
from idsync.resync import Progress, plan_resync
from streams.events import ContactState

OU_A, OU_B = "ou=a,ou=gal,dc=central", "ou=b,ou=gal,dc=central"


def state(anchor: str, name: str, ou: str = OU_A, present: bool = True, **attributes: str) -> ContactState:
    if not present:
        return ContactState(anchor=anchor, present=False, container_dn="")
    return ContactState(
        anchor=anchor, present=True, container_dn=ou, dn=f"cn={name},{ou}",
        attributes={"displayName": (name,), **{k: (v,) for k, v in attributes.items()}},
        managed_attributes=("displayName", "mail"),
    )


def entry(anchor: str, dn: str, **attributes: str) -> Entry:
    return Entry(dn=dn, anchor=anchor, attributes={k.lower(): (v,) for k, v in attributes.items()})


def test_missing_wrong_extra_and_unchanged_contacts_are_told_apart():
    desired = {
        "p1": state("p1", "Ada"),
        "p2": state("p2", "Bob"),
        "p3": state("p3", "Cy"),
        "p4": state("p4", "", present=False),
    }
    found = [
        entry("p2", f"cn=Bob,{OU_A}", displayName="Bobby"),
        entry("p3", f"CN=Cy,{OU_A.upper()}", displayName="Cy"),
        entry("p4", f"cn=Dee,{OU_A}"),
        entry("p9", f"cn=Nobody,{OU_A}"),
    ]
    plan = plan_resync(desired, found)
    assert [s.anchor for s in plan.create] == ["p1"]
    assert [(s.anchor, why) for s, why in plan.correct] == [("p2", "differs in displayName")]
    assert sorted(e.anchor for e in plan.delete) == ["p4", "p9"]
    assert plan.unchanged == 1 and plan.errors == []


def test_a_contact_under_another_name_is_corrected_and_its_clash_name_is_right():
    desired = {"p1": ContactState(anchor="p1", present=True, container_dn=OU_A, dn=f"cn=Ada,{OU_A}",
                                  fallback_dn=f"cn=Ada (a@x),{OU_A}", managed_attributes=())}
    assert plan_resync(desired, [entry("p1", f"cn=Ada (a@x),{OU_A}")]).unchanged == 1
    [(_, why)] = plan_resync(desired, [entry("p1", f"cn=Old,{OU_A}")]).correct
    assert "named" in why


def test_one_forest_only_and_an_anchor_on_two_entries_is_an_error():
    desired = {"p1": state("p1", "Ada"), "p2": state("p2", "Bob", ou=OU_B)}
    plan = plan_resync(desired, [entry("p3", f"cn=X,{OU_B}")], within=OU_A)
    assert [s.anchor for s in plan.create] == ["p1"] and plan.delete == []
    twice = plan_resync({}, [entry("p1", f"cn=A,{OU_A}"), entry("p1", f"cn=B,{OU_A}")])
    assert twice.delete == [] and "on 2 entries" in twice.errors[0]


def test_progress_counts_on_a_terminal_line():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    progress = Progress(3, out)
    progress.advance(2)
    progress.advance(1)
    assert "\rresync: 2/3 contacts written" in out.getvalue() and out.getvalue().endswith("\n")
