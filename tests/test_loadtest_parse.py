"""Parsers of the load test on output captured from real runs (tests/data/loadtest/):
locust CSVs from `locust --csv` against `knet serve`, and that server's `/metrics` text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import locust_run, prom
from loadtest.runner import percentile

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "loadtest"


def test_stats_aggregated_row_in_seconds():
    s = locust_run.read_stats(DATA / "ok_stats.csv")
    assert (s.requests, s.failures) == (50, 0)
    assert s.rps == pytest.approx(25.296125353541104)
    assert (s.p50_s, s.p95_s, s.p99_s) == pytest.approx((0.072, 0.110, 0.110))
    assert s.mean_s == pytest.approx(0.07501609576000192)
    assert s.min_s <= s.p50_s <= s.p95_s <= s.p99_s <= s.max_s


def test_stats_per_endpoint_row_and_missing_row():
    assert locust_run.read_stats(DATA / "status404_stats.csv", name="/sample").failures == 29
    with pytest.raises(ValueError, match="no row named"):
        locust_run.read_stats(DATA / "ok_stats.csv", name="/logprob")


@pytest.mark.parametrize("name, expected", [("status404_failures.csv", {"404": 29}),
                                            ("status400_failures.csv", {"400": 29}),
                                            ("ok_failures.csv", {}), ("absent.csv", {})])
def test_failures_grouped_by_status(name, expected):
    assert locust_run.read_failures(DATA / name) == expected


def test_failures_connection_and_other_errors(tmp_path):
    f = tmp_path / "x_failures.csv"
    f.write_text("Method,Name,Error,Occurrences\nPOST,/sample,CatchResponseError('HTTP 0'),3\n"
                 "POST,/sample,ConnectionRefusedError(111),2\nPOST,/sample,CatchResponseError('HTTP 503'),1\n"
                 "POST,/logprob,CatchResponseError('HTTP 503'),4\n")
    assert locust_run.read_failures(f) == {"connection": 3, "ConnectionRefusedError(111)": 2, "503": 5}


def test_prometheus_text_from_the_service():
    after = prom.parse((DATA / "metrics_after.txt").read_text())
    assert prom.total(after, "knet_solve_seconds_count", model="tiny", endpoint="sample") == 55
    assert prom.total(after, "knet_samples_total", model="tiny") == 3520
    assert prom.total(after, "knet_solve_seconds_count", model="tiny", endpoint="logprob") == 0
    b = prom.buckets(after, "knet_solve_seconds", model="tiny", endpoint="sample")
    assert b[-1] == (float("inf"), 55.0) and [c for _, c in b] == sorted(c for _, c in b)


def test_metric_deltas_over_a_step():
    before = prom.parse((DATA / "metrics_before.txt").read_text())
    after = prom.parse((DATA / "metrics_after.txt").read_text())
    d = prom.delta(before, after, "tiny", "sample")
    assert d.solves == 53 and d.requests == 53 and d.rows == 53 * 64
    assert d.nfe_mean == 256  # rk4: 4 evaluations × 32 steps × 2 layers
    assert d.solve_mean_s == pytest.approx((1.5125834640009543 - 0.04733173399995394) / 53)
    assert d.batch_mean == 64
    # 21 of the 53 new solves ≤ 25 ms, 52 ≤ 50 ms: rank 26.5 interpolated in (25, 50] ms
    assert d.solve_p50_s == pytest.approx(0.025 + 0.025 * (26.5 - 21) / (52 - 21))
    assert d.failures_by_status == {}
    empty = prom.delta(after, after, "tiny", "sample")
    assert empty.solves == 0 and empty.solve_mean_s is None and empty.solve_p50_s is None


def test_histogram_quantile_hand_computed():
    cum = [(1.0, 2.0), (2.0, 6.0), (float("inf"), 8.0)]
    assert prom.histogram_quantile(0.5, cum) == pytest.approx(1.5)  # rank 4: 1 + (4−2)/(6−2)
    assert prom.histogram_quantile(0.125, cum) == pytest.approx(0.5)  # rank 1 inside [0, 1]
    assert prom.histogram_quantile(0.9, cum) == 2.0  # in +Inf: the highest finite bound
    assert prom.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def test_prometheus_garbage_is_an_error():
    with pytest.raises(ValueError):
        prom.parse("knet_requests_total{model=\"a\" 1\n")


def test_nearest_rank_percentile():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 50) == 3.0 and percentile(xs, 99) == 5.0 and percentile(xs, 20) == 1.0
    assert percentile([], 50) is None


def test_keep_families_stays_parseable_and_complete():
    text = (DATA / "metrics_after.txt").read_text()
    kept = prom.keep_families(text)
    assert len(kept) < len(text) and "bentoml_service_request_total" not in kept
    full, small = prom.parse(text), prom.parse(kept)
    assert {k: v for k, v in full.items() if k[0].startswith("knet_")} == \
        {k: v for k, v in small.items() if k[0].startswith("knet_")}
    assert prom.in_progress(small) == 0.0 and prom.in_progress({}) is None


def test_keep_families_for_one_model():
    lines = []
    for line in (DATA / "metrics_after.txt").read_text().splitlines():
        lines.append(line)
        if 'model="tiny"' in line:  # the same series for a second model, inside its family
            lines.append(line.replace('model="tiny"', 'model="other"'))
    two = "\n".join(lines) + "\n"
    assert prom.total(prom.parse(two), "knet_requests_total", model="other") == 55
    kept = prom.parse(prom.keep_families(two, model="tiny"))
    assert {dict(labels).get("model") for _, labels in kept} == {None, "tiny"}
    assert prom.total(kept, "knet_requests_total", model="tiny") == 55


def test_committed_report_reads_back_typed():
    # the CPU report in the repository, read into typed rows: the headline recomputed from
    # them equals the one the measuring run stored beside them
    from loadtest.report import headline
    from loadtest.results import LoadTestResult
    raw = json.loads((ROOT / "reports" / "cpu" / "results.json").read_text())
    result = LoadTestResult.from_json(raw)
    assert len(result.rows) == len(raw["rows"]) > 0
    assert headline(result) == raw["headline"]
    stored = raw["circuit"]["twomoon"]["simulated"]
    assert result.circuit["twomoon"].simulated.worst_rel_error == stored["worst_rel_error"]


def test_result_without_rows_is_refused():
    from loadtest.results import LoadTestResult
    with pytest.raises(ValueError, match="not a load-test result"):
        LoadTestResult.from_json({"circuit": {}, "service": {}, "notes": []})
