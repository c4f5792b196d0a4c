"""Priority across a queue's job types, with aging (``Limits.priority_aging``): the rules, without Ray."""


import pytest

from actors.queue import JobQueue, Limits

from .conftest import make_queue

T0 = 1_700_000_000.0


def make(tmp_path, aging: float) -> JobQueue:
    return make_queue(tmp_path / "q.sqlite3", Limits(lease_ttl=10, priority_aging=aging))


def enqueue(q, now, **spec):
    [(job, _)] = q.enqueue_many([{"type": "echo", **spec}], now)
    return job["id"]


def test_a_lease_over_several_types_takes_the_best_ranked_job_of_any_of_them(tmp_path):
    q = make(tmp_path, aging=0)
    low = enqueue(q, T0, type="echo", priority=0)  # its lane is older than the others
    high = enqueue(q, T0 + 1, type="noop", priority=5)
    mid = enqueue(q, T0 + 2, type="stamp", priority=2)
    assert list(q.ready_counts()) == [q.lanes_of(["noop"])[0], q.lanes_of(["stamp"])[0], q.lanes_of(["echo"])[0]]
    assert [lease["job_id"] for lease in q.lease("r", None, 3, T0 + 3)] == [high, mid, low]


def test_strict_priority_lets_a_steady_stream_of_higher_priorities_starve_a_low_one(tmp_path):
    q = make(tmp_path, aging=0)
    low = enqueue(q, T0, priority=0)
    for second in range(1, 2000):  # one urgent job a second, one job served a second
        enqueue(q, T0 + second, priority=10)
        [lease] = q.lease("r", None, 1, T0 + second)
        assert lease["job_id"] != low


def test_with_aging_a_low_priority_waits_at_most_its_priority_gap_times_the_aging(tmp_path):
    q = make(tmp_path, aging=60)
    low = enqueue(q, T0, priority=0)
    started = None
    for second in range(1, 2000):
        enqueue(q, T0 + second, priority=10, type="noop")  # another type: aging holds across lanes
        leases = q.lease("r", ["echo", "noop"], 1, T0 + second)
        if leases[0]["job_id"] == low:
            started = second
            break
    # Priority 10 is worth 600 s of waiting: the low job goes once the newcomers are younger than that.
    assert started is not None and 600 <= started <= 602


def test_aging_keeps_priority_first_among_jobs_of_about_the_same_age(tmp_path):
    q = make(tmp_path, aging=60)
    older = enqueue(q, T0, priority=0)
    urgent = enqueue(q, T0 + 30, priority=1)  # half a minute younger, a point more: it goes first
    later = enqueue(q, T0 + 90, priority=1)  # a minute and a half younger: after the old one
    assert [lease["job_id"] for lease in q.lease("r", None, 3, T0 + 100)] == [urgent, older, later]


def test_ranks_survive_a_reload(tmp_path):
    q = make(tmp_path, aging=60)
    ids = [enqueue(q, T0, priority=0), enqueue(q, T0 + 30, priority=1, type="noop")]
    q.store.commit()
    q.store.close()
    again = make(tmp_path, aging=60)
    assert [lease["job_id"] for lease in again.lease("r", None, 2, T0 + 40)] == ids[::-1]


@pytest.mark.parametrize("aging", [0, 60])
def test_groups_still_take_turns_within_a_lane(tmp_path, aging):
    q = make(tmp_path, aging=aging)
    big = [enqueue(q, T0 + i * 0.001, group={"key": "big"}) for i in range(5)]
    small = enqueue(q, T0 + 1, group={"key": "small"})
    taken = [lease["job_id"] for lease in q.lease("r", None, 3, T0 + 2)]
    assert taken == [big[0], small, big[1]]
