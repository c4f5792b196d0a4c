"""The Ray Serve application: the FastAPI app, built on each replica from DOJO_* settings."""

from __future__ import annotations

import logging
import os

from ray import serve as ray_serve

from actors.settings import Settings

log = logging.getLogger(__name__)

APP_NAME = "dojo"

#: Ray Serve's own throughput settings (most of its RAY_SERVE_THROUGHPUT_OPTIMIZED mode): the API's
#: code runs on the replica's event loop instead of a thread of its own, the router in that loop too,
#: no per-request log line on stderr (the log files keep them, flushed in batches), and the proxy
#: talks to the replica over gRPC. Each Serve process reads them once, when it starts: the replica
#: gets them through its runtime_env; the controller and the proxy inherit the environment of the
#: Ray head (``dojo up`` starts it with them). An exported value wins over these.
SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_PROXY_USE_GRPC": "1",
}


def serve_env() -> dict[str, str]:
    """SERVE_ENV with what this process's environment sets instead."""
    return {key: os.environ.get(key, value) for key, value in SERVE_ENV.items()}


def build_asgi_app():
    """The replica's one app: Serve's ingress and the replica's own listener serve the same one (one
    coalescer, one event hub with one subscription per queue, one set of stream caps per replica).

    A plain function (Serve calls a function it is given; a ``functools.cache`` wrapper it would take
    for the app itself)."""
    if not _APP:
        from .app import create_app

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _APP.append(create_app(Settings.from_env()))
    return _APP[0]


_APP: list = []


class Listener:
    """With DOJO_INGRESS=replica (``Settings.ingress``), the replica serves the API on DOJO_PORT itself.

    Serve still runs, places, health-checks and restarts the replicas; only the per-request hop
    through its proxy (an actor call per request: ~25x what the request itself costs on 2 cores)
    is gone. Each replica binds DOJO_PORT with SO_REUSEPORT, so the replicas of one node share the
    port and the kernel spreads connections over them, and a replica replaced by an update or a
    restart hands over without a gap.
    """

    async def __init__(self):
        self._server_task = None
        settings = Settings.from_env()
        if settings.ingress == "replica":
            self._server_task = await _listen(settings)

    def check_health(self) -> None:
        if self._server_task is not None and self._server_task.done():
            raise RuntimeError(f"the replica's listener stopped: {self._server_task!r}")


async def _listen(settings: Settings):
    import asyncio
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        # Serve's proxy of an earlier `dojo up` holds the port: it keeps serving, this replica does not.
        sock.close()
        log.warning("DOJO_INGRESS=replica, but %s:%s is taken (%s): Serve's proxy answers there; run "
                    "`dojo down` then `dojo up` to serve it from the replicas", settings.host, settings.port, exc)
        return None
    sock.listen(2048)
    sock.setblocking(False)
    config = uvicorn.Config(build_asgi_app(), log_level="warning", access_log=False, lifespan="off",
                            timeout_keep_alive=30)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # Serve owns the replica's signals
    return asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))


DojoAPI = ray_serve.deployment(
    ray_serve.ingress(build_asgi_app)(Listener),
    name="api",
    max_ongoing_requests=2000,
)


def deploy(settings: Settings) -> None:
    """Start (or update in place) the API on ``settings.host:settings.port``; returns once it serves.

    Serve reads its proxy's placement when it first starts: switching DOJO_INGRESS on a running
    cluster needs ``serve shutdown`` (or ``dojo down``) first.
    """
    mode = settings.ingress
    # The API lives on the head with the queue actors: worker nodes come and go with the autoscaler.
    ray_serve.start(http_options={"host": settings.host, "port": settings.port},
                    proxy_location="Disabled" if mode == "replica" else "HeadOnly")
    app = DojoAPI.options(
        num_replicas=settings.serve_replicas,
        ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001},
                           "runtime_env": {"env_vars": {**serve_env(), **settings.env()}}},
    ).bind()
    ray_serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
