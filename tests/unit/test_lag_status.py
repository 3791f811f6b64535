"""Burrow's lag rules over a window of samples (streams/monitoring/lag_status.py)."""

from __future__ import annotations

import pytest

from streams.monitoring.lag_status import LagWindow, Sample, Status, group_status, partition_status


def window(*points: tuple[int | None, int], owned: bool = True) -> list[Sample]:
    """Samples one second apart from (committed offset, lag) pairs."""
    return [Sample(at=float(i), offset=offset, lag=lag, owned=owned) for i, (offset, lag) in enumerate(points)]


def test_lag_zero_in_any_sample_is_ok():
    assert partition_status(window((10, 5), (10, 0), (10, 7))) is Status.OK
    assert partition_status(window((10, 5), (10, 6), (10, 0))) is Status.OK


def test_an_offset_moving_back_is_a_rewind_before_anything_else():
    assert partition_status(window((10, 5), (8, 7), (9, 6))) is Status.REWIND


def test_offsets_that_do_not_move_with_nobody_owning_the_partition_are_a_stop():
    assert partition_status(window((10, 5), (10, 9), (10, 12), owned=False)) is Status.STOP


def test_offsets_that_do_not_move_while_a_member_owns_the_partition_are_a_stall():
    assert partition_status(window((10, 5), (10, 5), (10, 5))) is Status.STALL


def test_a_moving_offset_whose_lag_never_falls_is_a_warning():
    assert partition_status(window((10, 5), (12, 5), (15, 8))) is Status.WARN


def test_a_moving_offset_whose_lag_falls_somewhere_is_ok():
    assert partition_status(window((10, 5), (12, 9), (20, 4))) is Status.OK


def test_a_group_that_never_committed_is_judged_on_its_lag_alone():
    assert partition_status(window((None, 5), (None, 8), owned=False)) is Status.STOP
    assert partition_status(window((None, 5), (3, 2))) is Status.OK


def test_one_sample_cannot_say_stop_stall_or_warn():
    assert partition_status(window((10, 5), owned=False)) is Status.OK
    assert partition_status([]) is Status.OK


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], Status.OK),
    ([Status.OK, Status.WARN, Status.OK], Status.WARN),
    ([Status.WARN, Status.STOP], Status.STOP),
    ([Status.STOP, Status.STALL, Status.WARN], Status.STALL),
    ([Status.STALL, Status.REWIND], Status.ERR),
])
def test_a_group_is_as_bad_as_its_worst_partition_and_a_rewind_makes_it_err(statuses, expected):
    assert group_status(statuses) is expected


def test_the_window_slides_over_the_last_samples_of_each_key():
    lag = LagWindow(3)
    for i, (offset, lag_records) in enumerate([(0, 0), (1, 4), (1, 5), (1, 6)]):
        lag.add("p0", Sample(at=float(i), offset=offset, lag=lag_records, owned=True))
    lag.add("p1", Sample(at=9.0, offset=3, lag=0, owned=True))
    assert [s.lag for s in lag.samples("p0")] == [4, 5, 6]
    assert lag.status("p0") is Status.STALL  # the zero lag slid out of the window
    assert lag.span("p0") == 2.0
    assert lag.status("p1") is Status.OK and lag.span("p1") == 0.0
    assert lag.samples("unknown") == () and lag.status("unknown") is Status.OK


def test_a_window_holds_at_least_one_sample():
    with pytest.raises(ValueError):
        LagWindow(0)
