"""``backline bench bridge`` measures a real server process: a short region echoes back intact."""

import statistics

from backline.plugin_bridge.bench import run


def test_bridge_bench_reports_each_part_for_a_short_region():
    report = run([0.05], sample_rate=48_000, channels=2)  # 3 s stereo
    (result,) = report["results"]
    assert result["region_mb"] > 1 and result["overhead_seconds"] > 0
    assert result["server_peak_rss_mb"] >= result["server_idle_rss_mb"] > 0
    assert result["overhead_seconds"] == round(result["upload_seconds"] + result["download_seconds"], 3) or \
        abs(result["overhead_seconds"] - result["upload_seconds"] - result["download_seconds"]) < 0.002


def test_bridge_bench_reports_the_first_job_and_the_median_of_the_later_ones():
    (result,) = run([0.02], sample_rate=48_000, channels=2, jobs=3)["results"]
    each = result["overhead_seconds_each"]
    assert len(each) == 3 and each[0] == result["overhead_seconds"]
    assert abs(result["later_overhead_seconds"] - statistics.median(each[1:])) < 0.002


def test_bridge_bench_can_download_into_a_buffer_the_client_keeps():
    (result,) = run([0.02], sample_rate=48_000, channels=2, jobs=2, into="buffer")["results"]
    assert result["download_into"] == "buffer" and len(result["overhead_seconds_each"]) == 2


def test_bridge_bench_runs_several_fresh_servers_and_counts_their_first_jobs():
    (result,) = run([0.02], sample_rate=48_000, channels=2, jobs=2, servers=3)["results"]
    firsts = result["first_overhead_seconds_each_server"]
    assert len(firsts) == 3 and result["servers"] == 3
    assert abs(result["overhead_seconds"] - statistics.median(firsts)) < 0.002
    assert result["first_jobs_under_100_ms"] == sum(value < 0.1 for value in firsts)
    assert result["later_jobs"] == 3 and 0 <= result["later_jobs_under_100_ms"] <= 3
