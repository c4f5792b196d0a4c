"""``retention.Paced``: the pace of the actor's paged clean-ups (job retention, event pruning), without Ray."""

from actors.retention import Paced

T0 = 1_700_000_000.0


def test_a_page_when_due_and_again_a_second_later_while_pages_come_back_full():
    pages, calls = [500, 500, 3, 500], []

    def step(now):
        calls.append(now)
        return pages.pop(0)

    paced = Paced(3600.0, 500, step)
    assert paced.run(T0) == 500  # due at once after a start
    assert paced.run(T0 + 0.5) == 0
    assert paced.run(T0 + 1) == 500  # a full page: more in a second
    assert paced.run(T0 + 2) == 3  # the backlog is gone: next in an hour
    assert paced.run(T0 + 3601) == 0
    assert paced.run(T0 + 3602) == 500
    assert calls == [T0, T0 + 1, T0 + 2, T0 + 3602]
