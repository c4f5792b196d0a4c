"""The API's routers, one per resource; ``serve.app.create_app`` includes them in ``ROUTERS``' order.

Each module owns its paths and the handlers behind them; what routes share (who asks, the queue
facade, the view of a job) is in ``serve.deps``, errors in ``serve.errors``, live streams in
``serve.streams``. The dashboard (``serve.dashboard``) is one more router, calling these handlers.
"""

from . import channels, events, health, jobs, leases, limits, logs, objects, queues, schedules, tokens, triggers

ROUTERS = [module.router for module in (health, jobs, events, queues, objects, channels, triggers, schedules,
                                        limits, tokens, leases, logs)]

__all__ = ["ROUTERS"]
