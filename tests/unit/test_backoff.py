"""Backoff delays: the cap is a promise, jitter included (property test over many draws, no Ray)."""

import random

import pytest

from actors.jobs import Backoff


@pytest.mark.parametrize("strategy", ["exponential", "fixed"])
def test_jitter_never_pushes_a_delay_past_the_cap_or_below_zero(strategy):
    rng = random.Random(7)
    for _ in range(20_000):
        cap = rng.choice([0.0, 0.5, 1.0, 10.0, 300.0, rng.uniform(0, 1000)])
        backoff = Backoff(strategy, delay=rng.uniform(0, 200), cap=cap, jitter=rng.choice([0.1, 0.5, 1.0, rng.random()]))
        attempt = rng.randint(1, 30)
        delay = backoff.delay_for(attempt, rng)
        assert 0.0 <= delay <= cap, (backoff, attempt, delay)


def test_jitter_still_spreads_delays_that_sit_at_the_cap():
    """Capped retries of many jobs must not all land at the same instant (the point of jitter)."""
    rng = random.Random(3)
    backoff = Backoff("exponential", delay=1.0, cap=60.0, jitter=0.1)
    delays = {round(backoff.delay_for(20, rng), 6) for _ in range(200)}
    assert len(delays) > 100 and max(delays) <= 60.0 and min(delays) >= 54.0
