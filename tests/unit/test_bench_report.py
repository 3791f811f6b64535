"""The end-to-end benchmark's pure figures and table (bench/e2e): no server, no timing asserted."""

import math

import pytest

from bench.e2e import report
from bench.e2e.procstat import parse_cpu_seconds, parse_peak_rss_kb
from bench.e2e.stats import latency, median, percentile, rate_over_time, ratio, sync_figures
from bench.e2e.workload import split


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.95) == 7.0
    assert percentile(list(reversed(values)), 0.0) == 1
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_latency_counts_what_never_arrived_and_keeps_sorted_milliseconds():
    sent = {"a": 10.0, "b": 11.0, "c": 12.0}
    seen = {"a": 10.002, "b": 11.001, "other": 1.0}
    summary, values = latency(sent, seen)
    assert (summary.sent, summary.arrived, summary.missing) == (3, 2, 1)
    assert values == pytest.approx([1.0, 2.0])
    assert summary.max_ms == pytest.approx(2.0)
    assert summary.as_dict()["missing"] == 1


def test_latency_counts_a_change_seen_before_its_modify_returned_as_zero():
    summary, values = latency({"a": 5.0, "b": 6.0}, {"a": 4.999, "b": 6.003})
    assert summary.early == 1
    assert values == pytest.approx([0.0, 3.0])


def test_latency_of_nothing_arrived_is_unknown_not_zero():
    summary, values = latency({"a": 1.0}, {})
    assert values == [] and summary.missing == 1
    assert math.isnan(summary.p50_ms) and math.isnan(summary.max_ms)


def test_sync_figures_from_arrival_moments():
    figures = sync_figures(100.0, [101.0, 104.0, 102.0, 103.0], expected=5)
    assert (figures.objects, figures.first_s, figures.last_s) == (4, 1.0, 4.0)
    assert figures.per_second == 1.0
    assert figures.flowing_per_second == 1.0
    assert math.isnan(sync_figures(0.0, [3.0], expected=1).flowing_per_second)
    assert math.isnan(sync_figures(0.0, [], expected=3).per_second)


def test_rate_over_time_fills_empty_bins():
    assert rate_over_time(10.0, [10.1, 10.2, 11.6, 11.7, 11.8], bin_seconds=0.5) == [
        (0.0, 4.0), (0.5, 0.0), (1.0, 0.0), (1.5, 6.0)]
    assert rate_over_time(0.0, [], 1.0) == []
    # An arrival before the start (a watcher's clock read first) lands in the first bin.
    assert rate_over_time(5.0, [4.9], 1.0) == [(0.0, 1.0)]


def test_ratio_and_median_with_unknowns():
    assert ratio(30.0, 10.0) == 3.0
    for ours, reference in ((None, 1.0), (1.0, None), (1.0, 0.0), (math.nan, 1.0)):
        assert math.isnan(ratio(ours, reference))
    assert median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert math.isnan(median([math.nan]))


def test_number_and_ratio_cells():
    assert [report.number(v) for v in (None, math.nan, 0.123, 12.34, 1234.5, 7)] == [
        "-", "-", "0.12", "12.3", "1,234", "7"]
    assert report.times(25.0, 10.0) == "2.50x"
    assert report.times(500.0, 10.0) == "50x"
    assert report.times(1.0, None) == "-"
    assert report.times(1.0, 0.0) == "-"
    assert report.times(5000.0, 1.0) == ">1000x"
    assert report.times(1.0, 500.0) == "<0.01x"


def test_table_aligns_rows_under_the_header_with_section_titles():
    text = report.format_table(["a section", ("p50, ms", "12.0", "1.00", "12x"), ("long measure name", "1", "-", "-")])
    lines = text.splitlines()
    assert lines[0].split() == ["measure", "idsync", "reference", "idsync/ref"]
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2] == "a section:"
    assert len({len(line) for line in (lines[0], lines[3], lines[4])}) == 1
    assert lines[3].endswith("12x")


def _results() -> dict:
    step = {"sent": 100, "achieved_rate": 50.0, "idsync": {"p50_ms": 20.0, "p95_ms": 30.0, "p99_ms": 40.0,
                                                           "max_ms": 50.0, "missing": 1, "early": 0},
            "reference": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 4.0, "max_ms": 5.0, "missing": 0, "early": 3}}
    return {
        "date": "2026-12-04T00:00:00+00:00",
        "load": {"users": 1000, "forests": 2, "rates": [50.0], "seconds": 2.0, "repeats": 3},
        "initial_sync": {"idsync": {"objects": 1000, "expected": 1000, "first_s": 4.0, "last_s": 10.0,
                                    "per_second": 100.0, "flowing_per_second": 150.0},
                         "reference": {"objects": 1000, "expected": 1000, "first_s": 0.1, "last_s": 0.5,
                                       "per_second": 2000.0, "flowing_per_second": 3000.0}},
        "steady": {"50": step},
        "direct": {"1": {"per_second": 1000.0}, "4": {"per_second": 1250.0}},
    }


def test_rows_put_idsync_beside_the_reference_with_ratios():
    rows = report.rows(_results())
    by_measure = {row[0]: row for row in rows if not isinstance(row, str)}
    assert by_measure["time to the last object, s"] == ("time to the last object, s", "10.0", "0.50", "20x")
    assert by_measure["objects/s, start to last"][3] == "0.05x"
    assert by_measure["objects/s, first to last"][1:] == ("150", "3,000", "0.05x")
    assert by_measure["p99, ms"] == ("p99, ms", "40.0", "4.00", "10x")
    assert by_measure["never arrived"] == ("never arrived", "1", "0", "-")
    assert by_measure["visible before the modify returned (0 ms)"][1:] == ("0", "3", "-")
    assert by_measure["objects/s first to last vs 1 connection(s)"][1:] == ("150", "1,000", "0.15x")
    assert any(isinstance(row, str) and row.startswith("steady state 50/s") for row in rows)
    assert "idsync/ref" in report.table(_results())


def test_proc_parsers():
    stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 150 50 20 30 20 0 1 0 99 0 0"
    assert parse_cpu_seconds(stat, ticks=100) == pytest.approx(2.5)
    assert parse_peak_rss_kb("Name:\tpython\nVmPeak:\t 9000 kB\nVmHWM:\t   81234 kB\n") == 81234
    assert parse_peak_rss_kb("Name:\tzombie\n") == 0


def test_users_split_over_forests_in_order():
    assert split(5, 2) == [range(0, 3), range(3, 5)]
    assert split(10_000, 2) == [range(0, 5000), range(5000, 10_000)]
    assert sum(len(share) for share in split(7, 3)) == 7
