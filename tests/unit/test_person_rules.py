"""Persons: connectors kept by position, precedence with fall-back, same-forest conflicts,
and the delete breaker's sliding window."""

from __future__ import annotations

from streams.events import ObjectKind
from streams.rules.breaker import BreakerState, admit, decided
from streams.rules.person import Connector, Person, Precedence, merged_values, same_forest_duplicates


def connector(anchor: str, forest: str, position: str = "1", **attributes: str) -> Connector:
    return Connector(
        anchor=anchor, forest=forest, central=False, kind=ObjectKind.USER, dn=f"cn={anchor},dc={forest}",
        attributes={k.lower(): (v,) for k, v in attributes.items()}, position=position,
    )


def test_a_connector_state_is_taken_only_when_newer_and_a_departed_one_stays_gone():
    person = Person(person_id="P")
    person = person.with_connector(connector("a/1", "a", "2", mail="x"))
    assert person.with_connector(connector("a/1", "a", "1", mail="old")) is None
    gone = person.without_connector("a/1", "3")
    assert gone.connectors == {} and gone.departed == {"a/1": "3"}
    assert gone.with_connector(connector("a/1", "a", "2", mail="late")) is None
    assert Person.from_bytes(gone.to_bytes()) == gone


def test_precedence_takes_the_best_source_with_a_value_and_falls_back_when_it_loses_it():
    precedence = Precedence(default=("a", "b"), per_attribute={"title": ("b", "a")})
    first = connector("a/1", "a", title="Lead", displayname="Ada A")
    second = connector("b/1", "b", title="Engineer", displayname="Ada B", telephonenumber="42")
    merged = merged_values([first, second], precedence)
    assert merged == {"displayname": ("Ada A",), "title": ("Engineer",), "telephonenumber": ("42",)}
    without_title = connector("b/1", "b", displayname="Ada B")
    assert merged_values([first, without_title], precedence)["title"] == ("Lead",)


def test_forests_a_ranking_does_not_name_come_after_in_default_order():
    assert Precedence(default=("a", "b", "c"), per_attribute={"x": ("c",)}).ranking("X") == ("c", "a", "b")


def test_two_objects_of_one_forest_in_one_person_are_a_conflict():
    assert same_forest_duplicates([connector("a/2", "a"), connector("a/1", "a"), connector("b/1", "b")]) == {
        "a": ["a/1", "a/2"]
    }


def test_the_breaker_lets_the_limit_through_per_window_then_holds_until_decided():
    state = BreakerState()
    verdicts = []
    for second in range(5):
        state, ok = admit(state, float(second), limit=3, window_seconds=10)
        verdicts.append(ok)
    assert verdicts == [True, True, True, False, False] and state.held == 2
    # Past the window the breaker stays tripped until the operator decided the held ones.
    state, ok = admit(state, 100.0, limit=3, window_seconds=10)
    assert not ok and state.held == 3
    state = decided(state, 3)
    state, ok = admit(state, 101.0, limit=3, window_seconds=10)
    assert ok and BreakerState.from_dict(state.to_dict()) == state
