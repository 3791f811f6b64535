"""The forest filter's decisions (connectors/ldap/scope_filter.py), with the directory's answers given."""

from collections.abc import Mapping, Sequence

import pytest

from connectors.ldap.scope_filter import FilterMemory
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind


class Answers:
    """The directory as the filter sees it: which objects match now, and their whole state."""

    def __init__(self, *matching: str) -> None:
        self.now = set(matching)
        self.asked: list[tuple[str, list[str]]] = []

    def matching(self, object_ids: Sequence[str]) -> set[str]:
        self.asked.append(("matching", list(object_ids)))
        return self.now & set(object_ids)

    def matching_whole(self, object_ids: Sequence[str]) -> Mapping[str, DirectoryChange]:
        self.asked.append(("whole", list(object_ids)))
        return {i: change(i, ChangeOp.ADD, "", attributes={"cn": ("whole",)}) for i in object_ids if i in self.now}


def change(object_id: str, op: ChangeOp, position: str, **fields) -> DirectoryChange:
    return DirectoryChange(
        forest="f", object_id=object_id, op=op, dn=f"cn={object_id},o=x", position=position, changed_at="t", **fields
    )


def modify(object_id: str, position: str) -> DirectoryChange:
    mod = Modification(attribute="mail", op=ModOp.REPLACE, values=(f"{object_id}@x",))
    return change(object_id, ChangeOp.MODIFY, position, modifications=(mod,))


def summary(changes: Sequence[DirectoryChange]) -> list[tuple[str, ChangeOp, str]]:
    return [(c.object_id, c.op, c.position) for c in changes]


def after_snapshot(*in_scope: str) -> FilterMemory:
    memory = FilterMemory()
    memory.learn_snapshot(list(in_scope))
    return memory


def test_changes_of_an_object_in_scope_that_still_matches_pass_as_they_are():
    memory = after_snapshot("a")
    batch = [modify("a", "1"), modify("a", "2")]
    assert memory.apply(batch, Answers("a")) == batch


def test_an_object_that_stops_matching_leaves_scope_at_its_last_position_then_is_dropped():
    memory = after_snapshot("a")
    published = memory.apply([modify("a", "1"), modify("a", "2")], Answers())
    assert summary(published) == [("a", ChangeOp.DELETE, "2")]
    assert memory.in_scope("a") is False
    assert memory.apply([modify("a", "3")], Answers()) == []


def test_an_object_that_starts_matching_enters_whole_at_its_last_position():
    memory = after_snapshot()
    answers = Answers("b")
    published = memory.apply([modify("b", "1"), modify("c", "2"), modify("b", "3")], answers)
    assert summary(published) == [("b", ChangeOp.ADD, "3")]
    assert published[0].attributes == {"cn": ("whole",)}
    assert ("whole", ["b", "c"]) in answers.asked
    assert memory.in_scope("b") is True


def test_a_new_object_that_matches_needs_no_second_read():
    memory = after_snapshot()
    answers = Answers("n")
    batch = [change("n", ChangeOp.ADD, "1", kind=ObjectKind.USER), modify("n", "2")]
    assert memory.apply(batch, answers) == batch
    assert answers.asked == [("matching", ["n"])]


def test_a_new_object_that_does_not_match_is_not_published():
    assert after_snapshot().apply([change("n", ChangeOp.ADD, "1")], Answers()) == []


@pytest.mark.parametrize(
    ("memory", "published"),
    [
        (after_snapshot("d"), [("d", ChangeOp.MODIFY, "1"), ("d", ChangeOp.DELETE, "2")]),
        (after_snapshot(), []),  # deleted while out of scope: nothing to tell
        (FilterMemory(), [("d", ChangeOp.DELETE, "2")]),  # unknown: the delete, never a half object
    ],
)
def test_a_deleted_object(memory, published):
    answers = Answers()
    assert summary(memory.apply([modify("d", "1"), change("d", ChangeOp.DELETE, "2")], answers)) == published
    assert answers.asked == []  # gone by now: nothing to ask the directory
    assert memory.in_scope("d") is not True


def test_without_memory_a_matching_object_is_published_whole_and_another_leaves():
    memory = FilterMemory()
    published = memory.apply([modify("in", "1"), modify("out", "2")], Answers("in"))
    assert summary(published) == [("in", ChangeOp.ADD, "1"), ("out", ChangeOp.DELETE, "2")]
    assert memory.apply([modify("out", "3")], Answers("in")) == []


def test_forget_keeps_a_snapshot_lesson_but_not_what_batches_taught():
    memory = after_snapshot("a")
    memory.forget()
    assert (memory.in_scope("a"), memory.in_scope("z")) == (True, False)
    memory.apply([modify("a", "1")], Answers())
    memory.forget()
    assert (memory.in_scope("a"), memory.in_scope("z")) == (None, None)


def test_a_copy_is_independent():
    memory = after_snapshot("a")
    copied = memory.copy()
    copied.apply([modify("a", "1")], Answers())
    assert (memory.in_scope("a"), copied.in_scope("a")) == (True, False)
