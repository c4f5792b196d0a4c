"""One two-node cluster (head without job CPUs + a worker node with its own disk) per test module."""

from __future__ import annotations

import pytest

from .cluster import TwoNodeCluster, can_isolate_disks


@pytest.fixture(scope="module")
def cluster():
    why = can_isolate_disks()
    if why:
        pytest.fail(f"the multi-node tests need a mount namespace per node: {why}")
    nodes = TwoNodeCluster()
    try:
        nodes.start()
        nodes.add_worker("worker1")
        nodes.deploy()
        yield nodes
    finally:
        nodes.stop()
