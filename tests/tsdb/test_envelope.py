"""The Prometheus JSON envelope and result parsing, on canned answers."""

from __future__ import annotations

import math

import httpx
import pytest

from ceems.tsdb.envelope import unwrap
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.samples import Sample, parse_instant, parse_matrix


def test_vector_values_include_nan_and_infinities() -> None:
    data = {
        "resultType": "vector",
        "result": [
            {"metric": {"uuid": "1"}, "value": [1700000000.5, "0.25"]},
            {"metric": {"uuid": "2"}, "value": [1700000000.5, "NaN"]},
            {"metric": {"uuid": "3"}, "value": [1700000000.5, "+Inf"]},
            {"metric": {"uuid": "4"}, "value": [1700000000.5, "-Inf"]},
        ],
    }
    samples = parse_instant(data)
    assert samples[0] == Sample({"uuid": "1"}, 0.25, 1_700_000_000_500)
    assert math.isnan(samples[1].value)
    assert samples[2].value == math.inf and samples[3].value == -math.inf


def test_scalar_is_one_unlabelled_sample() -> None:
    assert parse_instant({"resultType": "scalar", "result": [1.0, "2"]}) == [Sample({}, 2.0, 1000)]


def test_matrix_points() -> None:
    stream_data = {"metric": {"a": "b"}, "values": [[1, "1"], [2, "NaN"]]}
    data = {"resultType": "matrix", "result": [stream_data]}
    (stream,) = parse_matrix(data)
    assert stream.labels == {"a": "b"} and stream.points[0] == (1000, 1.0)
    assert math.isnan(stream.points[1][1])


@pytest.mark.parametrize(
    "data",
    [
        {"resultType": "matrix", "result": []},
        {"resultType": "vector", "result": [{"metric": {}, "value": [1, "one"]}]},
        {"resultType": "vector", "result": [{"metric": {}, "value": "1"}]},
        [],
    ],
)
def test_unexpected_instant_data_raises(data: object) -> None:
    with pytest.raises(TsdbError):
        parse_instant(data)


def test_error_envelope_keeps_status_type_and_message() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
    with pytest.raises(TsdbError, match="HTTP 400 bad_data: parse error") as caught:
        unwrap(httpx.Response(400, json=body), "/api/v1/query")
    assert (caught.value.status, caught.value.error_type, caught.value.error) == (
        400,
        "bad_data",
        "parse error",
    )


def test_non_json_answer_is_an_error_with_an_excerpt() -> None:
    page = "<html><body>502 Bad Gateway</body></html>"
    with pytest.raises(TsdbError, match="HTTP 502 without a Prometheus JSON body") as caught:
        unwrap(httpx.Response(502, text=page), "/api/v1/query")
    assert caught.value.status == 502 and "Bad Gateway" in caught.value.error


def test_no_content_is_success() -> None:
    assert unwrap(httpx.Response(204), "/api/v1/admin/tsdb/delete_series") is None
