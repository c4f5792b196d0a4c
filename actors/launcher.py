"""The owner of the runner tasks: a detached actor, so runners outlive a queue actor's restart.

Ray ends a task when the process that submitted it (its owner) dies. Runner
tasks submitted by a queue actor would die with it: a kill -9 or a crash of
the actor would turn every running attempt into a lost one, although its
worker was doing fine. The launcher only submits ``run_jobs`` and hands the
ref back; the queue actor watches it (as a borrower) as before. After a
restart the new actor adopts the runners that call in, and their leases
(reloaded with a fresh clock) stay theirs while they heartbeat.
"""

from __future__ import annotations

import os

import ray

from . import runner as runner_mod
from .settings import NAMESPACE

NAME = "dojo:launcher"


class Launcher:
    """Submits runner tasks and nothing else (it holds no state worth losing)."""

    def launch(self, options: dict, args: tuple) -> list:
        # A list, so the caller receives the ref itself rather than waiting for the runner's result.
        return [runner_mod.run_jobs.options(**options).remote(*args)]

    def ping(self) -> int:
        return os.getpid()


def launcher():
    """The cluster's launcher, created on first use (detached, restarted by Ray if it dies)."""
    return ray.remote(Launcher).options(
        name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        num_cpus=0, resources={"node:__internal_head__": 0.001}).remote()
