"""Fixtures for ``ray job submit`` tests: a Ray head of the module's own (see head.py) and a real S3 server."""

from __future__ import annotations

import pytest

from tests.render.conftest import s3_server  # noqa: F401  (a real S3 server for s3:// decks)

from .head import RayHead


@pytest.fixture(scope="module")
def head():
    cluster = RayHead().start()
    try:
        yield cluster
    finally:
        cluster.stop()
