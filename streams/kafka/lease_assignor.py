"""Who holds a lease after its group rebalances: the member that held it, else the oldest member.

Kafka's range and round-robin assignors give a one-partition topic to the member whose id sorts
first. Member ids end in a random UUID, so a worker that joins later takes a healthy holder's
lease one time in two: the reader stops there and starts again on the newcomer for nothing, and
every worker that joins or restarts shuffles the readers again. A lease must stay where it is.

Each member states in its join metadata since when it has been a member and, if it holds the
lease, the term it was granted. The group's leader gives the partition to the claim with the
latest term; when nobody claims it (its holder died or left), to the member that joined first
(ties by member id), under a new term: the leader's clock at that moment. A holder that was cut
off long enough to lose the lease, and comes back, claims an older term than the grant made in
its absence, by at least a session timeout: far more than the skew of synchronised clocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata


class Claim(NamedTuple):
    """What a member says when it joins: since when it has been a member, and the term of the
    lease it holds (None: it holds none)."""

    since: float
    term: float | None = None


# A member whose metadata cannot be read (another program in the group?) comes last and claims nothing.
_UNREADABLE = Claim(since=float("inf"))


def choose_holder(claims: Mapping[str, Claim], now: float) -> tuple[str, float]:
    """The member that gets the lease, and its term: the latest claim keeps its term; with no claim,
    the member that joined first gets a new term, `now`."""
    held = [(claim.term, member) for member, claim in claims.items() if claim.term is not None]
    if held:
        term, member = max(held)
        return member, term
    return min(claims, key=lambda member: (claims[member].since, member)), now


def encode_claim(claim: Claim) -> bytes:
    return orjson.dumps({"since": claim.since, "term": claim.term})


def decode_claim(user_data: bytes) -> Claim:
    try:
        fields = orjson.loads(user_data)
        return Claim(since=float(fields["since"]),
                     term=None if fields.get("term") is None else float(fields["term"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _UNREADABLE


class KeepHolderAssignor(AbstractPartitionAssignor):
    """An aiokafka partition assignor for lease groups; one instance per member (it remembers the
    term this member holds), unlike aiokafka's own, whose state is per class and so per process."""

    name = "idsync-keep-lease-holder"
    version = 0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._claim = Claim(since=clock())

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), encode_claim(self._claim))

    def assign(self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata],
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        holder, term = choose_holder({member: decode_claim(metadata.user_data)
                                      for member, metadata in members.items()}, self._clock())
        topics = sorted({topic for metadata in members.values() for topic in metadata.subscription})
        partitions = [(topic, sorted(cluster.partitions_for_topic(topic) or ())) for topic in topics]
        return {member: ConsumerProtocolMemberAssignment(self.version, partitions, orjson.dumps(term))
                if member == holder else ConsumerProtocolMemberAssignment(self.version, [], b"")
                for member in members}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        holds = any(partitions for _topic, partitions in assignment.assignment)
        self._claim = Claim(since=self._claim.since, term=orjson.loads(assignment.user_data) if holds else None)
