"""The demand rules in plain Python: shapes, caps, the aggregator and when a queue reports."""

from __future__ import annotations

from actors.jobs import JobType, Resources
from actors.scaling import (REFRESH_S, SCAN_INTERVAL_S, STALE_S, Aggregator, DemandTracker, backlog, bundles,
                            capped, shape_label, shape_of)

GPU = JobType("gpu", None, resources=Resources(num_cpus=1, num_gpus=1))
CPU = JobType("cpu", None, resources=Resources(num_cpus=1))
TTS = JobType("tts", None, resources=Resources(num_cpus=0.5, custom=(("tts", 1.0),)))
FREE = JobType("free", None, resources=Resources(num_cpus=0))
EXT = JobType("ext", None, external=True)
REGISTRY = {t.name: t for t in (GPU, CPU, TTS, FREE, EXT)}
S_GPU, S_CPU = shape_of(GPU.resources), shape_of(CPU.resources)


def jobs(*specs):
    return {f"j{i}": {"id": f"j{i}", "type": t, "status": s, "run_at": at}
            for i, (t, s, at) in enumerate(specs)}


def test_shapes_drop_zeros_and_label_for_metrics():
    assert shape_of(GPU.resources) == (("CPU", 1.0), ("GPU", 1.0))
    assert shape_label(shape_of(TTS.resources)) == "CPU=0.5,tts=1"
    assert shape_of(FREE.resources) == ()


def test_backlog_counts_queued_and_running_per_shape_and_the_oldest_wait():
    found = backlog(jobs(("gpu", "queued", 5.0), ("gpu", "queued", 3.0), ("gpu", "running", 1.0),
                         ("cpu", "scheduled", 0.0), ("cpu", "retrying", 0.0), ("ext", "queued", 0.0),
                         ("gone", "queued", 0.0), ("tts", "waiting", 0.0)).values(), REGISTRY)
    assert list(found) == [S_GPU]
    assert (found[S_GPU].queued, found[S_GPU].running, found[S_GPU].oldest_queued_at) == (2, 1, 3.0)


def test_500_gpu_jobs_ask_for_the_cap_and_shapes_needing_no_node_ask_nothing():
    demand = capped({S_GPU: 500, S_CPU: 3, (): 40}, 8)
    assert demand == {S_CPU: 3, S_GPU: 8}
    assert bundles(demand).count({"CPU": 1.0, "GPU": 1.0}) == 8
    assert len(bundles(demand)) == 11
    assert capped({S_GPU: 500}, 0) == {}


def test_aggregator_sums_queues_caps_and_requests_only_changes():
    sent, clock = [], [0.0]
    agg = Aggregator(8, sent.append, clock=lambda: clock[0])
    agg.report("a", {S_GPU: 5})
    agg.report("b", {S_GPU: 5, S_CPU: 1})
    assert sent[-1].count({"CPU": 1.0, "GPU": 1.0}) == 8 and {"CPU": 1.0} in sent[-1]
    agg.report("b", {S_GPU: 5, S_CPU: 1})
    assert len(sent) == 2  # unchanged: not requested again
    agg.report("a", {})
    agg.report("b", {})
    assert sent[-1] == []  # every queue empty: the request is cleared
    agg.report("c", {S_CPU: 2})
    clock[0] = STALE_S + 1
    agg.flush()
    assert sent[-1] == []  # a queue that stopped reporting is forgotten


def test_a_fresh_aggregator_requests_even_nothing_once():
    sent = []
    Aggregator(8, sent.append).flush()
    assert sent == [[]]  # replaces whatever a previous incarnation left in place


def test_tracker_reports_changes_refreshes_and_stays_quiet_when_idle():
    tracker = DemandTracker(8)
    assert tracker.tick({}, REGISTRY, 0.0) == ({}, {})  # first tick: clear what a previous actor reported
    assert tracker.tick({}, REGISTRY, 0.01) == (None, None)  # idle
    queue = jobs(*[("gpu", "queued", 0.0)] * 20)
    scan, report = tracker.tick(queue, REGISTRY, 0.02)  # the first job after idle: at once
    assert report == {S_GPU: 8} and scan[S_GPU].queued == 20
    assert tracker.tick(queue, REGISTRY, 0.03) == (None, None)  # rate-limited
    scan, report = tracker.tick(queue, REGISTRY, 0.02 + SCAN_INTERVAL_S)
    assert scan is not None and report is None  # unchanged
    scan, report = tracker.tick(queue, REGISTRY, 0.02 + REFRESH_S)
    assert report == {S_GPU: 8}  # refreshed for a restarted aggregator
    scan, report = tracker.tick({}, REGISTRY, 0.02 + REFRESH_S + SCAN_INTERVAL_S)
    assert report == {}
    assert tracker.tick({}, REGISTRY, 1e6) == (None, None)


def test_a_delayed_only_queue_is_not_rescanned_every_tick():
    tracker = DemandTracker(8)
    queue = jobs(("cpu", "scheduled", 99.0))
    tracker.tick(queue, REGISTRY, 0.0)
    assert tracker.tick(queue, REGISTRY, 0.05) == (None, None)


def test_a_jobs_own_resources_are_its_shape():
    job = {"id": "j", "type": "cpu", "status": "queued", "run_at": 1.0,
           "resources": {"num_cpus": 2, "num_gpus": 1, "custom": {}}}
    assert list(backlog([job], REGISTRY)) == [(("CPU", 2.0), ("GPU", 1.0))]
