"""The kill test's job type for dojo (on PYTHONPATH only while bench/vs_peers.py runs).

``bench_mark`` is ``noop`` plus the same side effect the peers' jobs have: it appends
its number to a file of its process (``marks.mark``), so runs survive kill -9 and
duplicates can be counted. Like ``noop`` it takes one CPU; it gets 3 attempts, so a
job whose runner was killed is run again (at-least-once, as the peers are set up).
"""

from actors.jobs import job

import marks


@job("bench_mark", max_attempts=3, num_cpus=1)
def bench_mark(ctx, payload):
    marks.mark(payload["dir"], payload["i"])
