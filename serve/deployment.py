"""The Ray Serve application: the FastAPI app, built on each replica from DOJO_* settings."""

from __future__ import annotations

import logging

from ray import serve as ray_serve

from actors.settings import Settings

APP_NAME = "dojo"


def build_asgi_app():
    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings.from_env())


DojoAPI = ray_serve.deployment(
    ray_serve.ingress(build_asgi_app)(),
    name="api",
    max_ongoing_requests=2000,
)


def deploy(settings: Settings) -> None:
    """Start (or update in place) the API on ``settings.host:settings.port``; returns once it serves."""
    # The API lives on the head with the queue actors: worker nodes come and go with the autoscaler.
    ray_serve.start(http_options={"host": settings.host, "port": settings.port}, proxy_location="HeadOnly")
    app = DojoAPI.options(
        num_replicas=settings.serve_replicas,
        ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001},
                           "runtime_env": {"env_vars": settings.env()}},
    ).bind()
    ray_serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
