"""The status page's HTML: readers, lag with its chart, conflicts, held deletes and errors, escaped."""

import re

from idsync.status_page import ReaderRow, Status, chart, render
from streams.kafka.error_topic import ErrorRecord
from streams.metaverse_events import Conflict, DeleteRequest

NOW = 1_796_000_000.0


def status(**overrides) -> Status:
    values = dict(
        at=NOW,
        readers=[ReaderRow(forest="forest-a", mode="accesslog", up=True, position_saved=NOW - 5, seconds_since_read=2),
                 ReaderRow(forest="forest-b", mode="usn-poll", up=False, position_saved=None, seconds_since_read=None)],
        sink_up=True,
        lag={"idsync-engine": [(NOW - 1800, 40, 12.0), (NOW - 60, 17, 3.5)]},
        conflicts=[Conflict(conflict_id="dn:cn=x", kind="dn-taken", open=True, reason="cn=<Ann> is taken",
                            parties=("a/1", "b/2"), at="2026-12-04T06:00:00+00:00")],
        held=[DeleteRequest(person="p-42", request_id="r", dn="cn=Bob,ou=c", requested_at="2026-12-04T06:01:00+00:00")],
        errors=[ErrorRecord(partition=0, offset=7, timestamp_ms=int(NOW * 1000), stage="contact-writer",
                            reason="constraint violation", forest="forest-a", origin_topic="contacts",
                            origin_partition=1, origin_offset=9, source_position=None, key=None, value=None)],
    )
    return Status(**(values | overrides))


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_every_section_shows_its_figures():
    page = text(render(status()))
    assert "forest-a accesslog up" in page and "forest-b usn-poll outage" in page
    assert "contact writer - up" in page
    assert "idsync-engine 17 3.5 s" in page
    assert "Open conflicts (1)" in page and "dn-taken dn:cn=x 2026-12-04 06:00:00Z a/1, b/2" in page
    assert "Held deletes (1)" in page and "p-42 cn=Bob,ou=c 2026-12-04 06:01:00Z" in page
    assert "Recent errors (1)" in page and "0:7" in page and "contacts[1]@9 constraint violation" in page


def test_directory_text_is_escaped_and_nothing_is_fetched_from_elsewhere():
    html = render(status())
    assert "cn=&lt;Ann&gt; is taken" in html and "<Ann>" not in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_the_chart_places_samples_in_the_last_hour():
    svg = chart({"g": [(NOW - 3600, 10, 0.0), (NOW, 0, 0.0)]}, NOW)
    (points,) = re.findall(r"points='([^']+)'", svg)
    (x0, y0), (x1, y1) = [tuple(float(v) for v in p.split(",")) for p in points.split()]
    assert x0 < x1 and y0 < y1  # oldest at the left, higher lag drawn higher
    assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_empty_sections_say_so():
    page = text(render(status(lag={}, conflicts=[], held=[], errors=[], problems=["Kafka not readable: x"])))
    assert "no lag read yet" in page and page.count("none") == 3 and "Kafka not readable: x" in page
