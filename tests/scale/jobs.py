"""Job types for the autoscaling tests: one needs a GPU, one a CPU; both say where they ran."""

from __future__ import annotations

import time

from actors.jobs import job


def _run(ctx, payload) -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id()
    ctx.progress(0.0, stage="started", node=node)
    deadline = time.monotonic() + float((payload or {}).get("seconds", 0.2))
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.05)
    return {"node": node}


@job("scale_gpu", max_attempts=3, retry_delay=0.1, retry_jitter=0, num_cpus=1, num_gpus=1)
def scale_gpu(ctx, payload):
    return _run(ctx, payload)


@job("scale_cpu", max_attempts=3, retry_delay=0.1, retry_jitter=0, num_cpus=1)
def scale_cpu(ctx, payload):
    return _run(ctx, payload)
