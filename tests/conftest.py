"""Shared fixtures: one local Ray cluster and one Serve app for the whole session."""

from __future__ import annotations

import os
import socket

import pytest

# Ray reads its auth mode when it is imported, and its processes read it from the environment: a test
# module that imports serve.launcher (which defaults RAY_AUTH_MODE to token, as `dojo` does) after
# another imported ray left the session's local cluster half in token mode, and its GCS, finding no
# token in a fresh HOME, never started. Say it once, before any test module imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")

from actors.settings import DEFAULT_JOB_MODULES, NAMESPACE, Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    env = {
        "DOJO_STATE_DIR": str(tmp_path_factory.mktemp("dojo-state")),
        "DOJO_PORT": str(free_port()),
        "DOJO_LEASE_TTL": "3",
        "DOJO_JOB_MODULES": os.environ.get("DOJO_TEST_JOB_MODULES", ",".join(DEFAULT_JOB_MODULES)),
        "DOJO_API_TOKEN": "test-api-token",
        "DOJO_WORKER_TOKEN": "test-worker-token",
        "DOJO_SECRET": "test-secret",
        "DOJO_SQLITE_SYNC": "NORMAL",
        "DOJO_CALLBACK_HOSTS": "127.0.0.1",  # callbacks to the tests' own receivers
    }
    os.environ.update(env)
    return Settings.from_env()


@pytest.fixture(scope="session")
def ray_cluster(settings):
    import ray

    # address="local": always a cluster of our own, never one that happens to run on this machine.
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def api(ray_cluster, settings) -> str:
    """Base URL of the Serve app on 127.0.0.1."""
    from serve.deployment import deploy
    from serve.launcher import wait_healthy

    deploy(settings)
    wait_healthy(settings)
    return f"http://{settings.host}:{settings.port}"


@pytest.fixture
def headers(settings) -> dict:
    return {"Authorization": f"Bearer {settings.api_token}"}
