"""A forest's LDAP filter applied to a reader's changes, shared by every reader mode.

The directory evaluates the filter (readers ask it which of a batch's objects match now), so
idsync never re-implements LDAP matching rules. What this module decides is what each change
means for downstream, given what earlier events told it:

- an object that matches and was published as in scope: its changes go out as they are;
- one that matches but was not in scope: it enters scope as an ADD of its whole current state
  (read from the directory), at the position of its last change in the batch;
- one that no longer matches but was in scope: it leaves scope as a DELETE at the position of
  its last change in the batch, and its changes are dropped until it matches again;
- a deleted object: its DELETE goes out unless it was known to be out of scope.

Scope is decided on the object's state when the batch is read, not on each intermediate state:
an object that stopped and started matching again between two reads simply stays in scope.

The memory of which objects are in scope is learnt from snapshots (the whole truth, so an
object it does not hold is out of scope) and kept up with each batch. A reader forgets it when
it resumes from a position other than its own last one (a start, or a retry after a failed
publish). Then an object's first change is decided without it: one that matches is published
whole (an ADD), one that does not is published as leaving (a DELETE; harmless for an object
that was never in scope, downstream keeps a tombstone of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from streams.events import ChangeOp, DirectoryChange


class FilterLookup(Protocol):
    """The directory's answers about the current state of a batch's objects."""

    def matching(self, object_ids: Sequence[str]) -> set[str]:
        """Those of the objects that exist in scope and match the filter now."""

    def matching_whole(self, object_ids: Sequence[str]) -> Mapping[str, DirectoryChange]:
        """An ADD of the whole current state of each object that exists in scope and matches now."""


class FilterMemory:
    """Which objects are in scope, as far as the changes returned so far told downstream."""

    def __init__(self) -> None:
        self._in_scope: dict[str, bool] = {}
        # True when _in_scope names every object in scope (learnt from a snapshot in this process).
        self._complete = False
        # Whether batches were applied since the snapshot (or since the start).
        self._applied = False

    def copy(self) -> FilterMemory:
        copied = FilterMemory()
        copied._in_scope, copied._complete, copied._applied = dict(self._in_scope), self._complete, self._applied
        return copied

    def learn_snapshot(self, object_ids: Sequence[str]) -> None:
        """A snapshot read through the filter: exactly these objects are in scope."""
        self._in_scope, self._complete, self._applied = dict.fromkeys(object_ids, True), True, False

    def forget(self) -> None:
        """What batches taught may not have reached downstream (the reader resumes from another
        position than its last batch's). A snapshot's lesson stands: a snapshot that failed to
        publish is read again, so the position after it only ever follows a published one."""
        if self._applied:
            self._in_scope, self._complete, self._applied = {}, False, False

    def in_scope(self, object_id: str) -> bool | None:
        """True or False as published; None when unknown."""
        return self._in_scope.get(object_id, False if self._complete else None)

    def apply(self, changes: Sequence[DirectoryChange], directory: FilterLookup) -> list[DirectoryChange]:
        """The batch's changes as they are to be published; updates the memory."""
        self._applied = True
        last: dict[str, int] = {}
        first: dict[str, DirectoryChange] = {}
        for index, change in enumerate(changes):
            last[change.object_id] = index
            first.setdefault(change.object_id, change)
        living = [i for i in first if changes[last[i]].op is not ChangeOp.DELETE]
        # Whole states only for objects that may enter scope here; an add is whole already.
        known = {i for i in living if self.in_scope(i) is True or first[i].op is ChangeOp.ADD}
        entering = [i for i in living if i not in known]  # maybe entering scope
        matching = directory.matching(sorted(known)) if known else set()
        whole = directory.matching_whole(entering) if entering else {}

        published: list[DirectoryChange] = []
        for index, change in enumerate(changes):
            object_id, scope = change.object_id, self.in_scope(change.object_id)
            if changes[last[object_id]].op is ChangeOp.DELETE:
                # Gone by now: in scope, its changes stand; otherwise only its DELETE, if maybe in scope.
                if scope is True or (change.op is ChangeOp.DELETE and scope is None):
                    published.append(change)
                if change.op is ChangeOp.DELETE:
                    self._forget(object_id)
            elif object_id in matching or object_id in whole:
                if scope is True or change.op is ChangeOp.ADD:
                    published.append(change)
                    self._in_scope[object_id] = True
                elif index == last[object_id]:
                    published.append(replace(whole[object_id], position=change.position, changed_at=change.changed_at))
                    self._in_scope[object_id] = True
            elif scope is not False and index == last[object_id]:
                published.append(
                    DirectoryChange(
                        forest=change.forest,
                        object_id=object_id,
                        op=ChangeOp.DELETE,
                        dn=change.dn,
                        kind=change.kind,
                        position=change.position,
                        changed_at=change.changed_at,
                        written_by_idsync=change.written_by_idsync,
                    )
                )
                self._leave(object_id)
        return published

    def _leave(self, object_id: str) -> None:
        if self._complete:
            self._in_scope.pop(object_id, None)
        else:
            self._in_scope[object_id] = False

    def _forget(self, object_id: str) -> None:
        self._in_scope.pop(object_id, None)
