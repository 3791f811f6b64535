"""The lease assignor's rule (streams/kafka/lease_assignor.py): a lease stays with its holder when
members join or leave; with no holder, the member that joined first gets it under a new term."""

from __future__ import annotations

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from streams.kafka.lease_assignor import Claim, KeepHolderAssignor, choose_holder, decode_claim, encode_claim


def test_the_holder_keeps_its_lease_and_its_term_when_an_older_member_joins() -> None:
    claims = {"a-member": Claim(since=50.0), "z-holder": Claim(since=100.0, term=120.0)}
    assert choose_holder(claims, now=200.0) == ("z-holder", 120.0)


def test_a_holder_cut_off_and_back_loses_to_the_grant_made_in_its_absence() -> None:
    claims = {"came-back": Claim(since=10.0, term=20.0), "granted-since": Claim(since=30.0, term=60.0)}
    assert choose_holder(claims, now=90.0) == ("granted-since", 60.0)


def test_without_a_holder_the_member_that_joined_first_gets_a_new_term() -> None:
    claims = {"b": Claim(since=40.0), "a": Claim(since=40.0), "c": Claim(since=10.0)}
    assert choose_holder(claims, now=99.0) == ("c", 99.0)
    del claims["c"]
    assert choose_holder(claims, now=99.0) == ("a", 99.0), "ties go to the smaller member id"


def test_a_claim_survives_its_encoding_and_unreadable_metadata_claims_nothing_and_comes_last() -> None:
    assert decode_claim(encode_claim(Claim(since=1.5, term=2.5))) == Claim(since=1.5, term=2.5)
    assert decode_claim(encode_claim(Claim(since=1.5))) == Claim(since=1.5)
    for garbage in (b"", b"\x00\x01", b"[]", b'{"term": 3}', b'{"since": "soon"}'):
        assert decode_claim(garbage) == Claim(since=float("inf")), garbage


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _OnePartitionTopics:
    """The only thing the assignor asks of aiokafka's ClusterMetadata."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


def test_members_that_join_later_never_take_the_lease_and_the_oldest_takes_it_when_its_holder_leaves() -> None:
    clock = _Clock()
    members = {}
    for name in ("m2", "m1", "m0"):  # m2 joins first but sorts last: Kafka's own assignors would move it
        clock.now += 10
        members[name] = KeepHolderAssignor(clock=clock)

    def rebalance(present: list[str]) -> str:
        cluster = _OnePartitionTopics()
        metadata = {name: ConsumerProtocolMemberMetadata.decode(members[name].metadata({"leases"}).encode())
                    for name in present}
        assignments = members[present[0]].assign(cluster, metadata)  # whichever member leads
        holders = []
        for name in present:
            members[name].on_assignment(assignments[name])
            if assignments[name].partitions():
                holders.append(name)
        assert len(holders) == 1, assignments
        return holders[0]

    assert rebalance(["m2"]) == "m2"
    clock.now += 10
    assert rebalance(["m1", "m2"]) == "m2"
    assert rebalance(["m0", "m2", "m1"]) == "m2"
    assert rebalance(["m0", "m1"]) == "m1", "the holder left: the member that joined first of the others"
    assert rebalance(["m1", "m0"]) == "m1"
