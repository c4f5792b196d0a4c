"""The README's first path, from nothing: a HOME that has never seen Ray or dojo.

Every piece of state a warm machine hides is absent here: no ``~/.ray``
(so no Ray token), no dojo state dir, no ``XDG_*``, ``RAY_*`` or ``DOJO_*``
in the environment, no cluster on the ports used. The CLI is driven as a
user drives it, in a subprocess whose output is not a terminal: ``dojo up``,
the sample deck, ``dojo render`` to completion, the video fetched over HTTP,
the Ray CLIs from the shell ``dojo env`` describes, then ``dojo down``.

The cluster is this test's own (its own ports, state and token), so it
shares nothing with the session's Ray.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent


def _fresh_env(home: Path) -> dict:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("XDG_", "RAY_", "DOJO_")) and k not in ("PYTHONPATH",)}
    ports = {name: free_port() for name in ("gcs", "dashboard", "api", "client", "agent")}
    return {
        **keep,
        "HOME": str(home),
        # Only the ports differ from a newcomer's: this cluster must not meet the suite's (or a developer's).
        "RAY_ADDRESS": f"127.0.0.1:{ports['gcs']}",
        "DOJO_PORT": str(ports["api"]),
        "DOJO_RAY_DASHBOARD_PORT": str(ports["dashboard"]),
        "DOJO_RAY_START_ARGS": f"--ray-client-server-port={ports['client']} "
                               f"--dashboard-agent-listen-port={ports['agent']}",
    }


def _run(args: list[str], env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_dojo_up_and_the_sample_render_work_from_an_empty_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = _fresh_env(home)
    dojo = str(BIN / "dojo")
    try:
        up = _run([dojo, "up"], env, tmp_path)
        token_file = home / ".ray" / "auth_token"
        assert token_file.is_file(), up.stdout + up.stderr
        assert str(token_file) in up.stdout, "dojo up must say where the Ray token is"

        # What `dojo env` prints is what a shell needs for Ray's own CLIs.
        exports = _run([dojo, "env"], env, tmp_path).stdout
        shell_env = {**env, **dict(re.findall(r"^export (\w+)=(\S+)$", exports, re.M))}
        assert shell_env.get("RAY_AUTH_MODE") == "token", exports
        _run([str(BIN / "ray"), "status", f"--address={env['RAY_ADDRESS']}"], shell_env, tmp_path, 60)
        jobs = _run([str(BIN / "ray"), "job", "list"], shell_env, tmp_path, 60)
        assert "auth" not in jobs.stderr.lower(), jobs.stderr

        _run([str(BIN / "python"), "-m", "pipelines.render.sample", str(tmp_path / "out")], env,
             Path(__file__).resolve().parents[2])
        render = _run([dojo, "render", str(tmp_path / "out" / "sample.md")], env, tmp_path, 300)
        # Not a terminal: one line per stage change, never carriage-return frames.
        assert "\r" not in render.stdout + render.stderr, repr(render.stderr[-2000:])
        stages = [line for line in render.stderr.splitlines() if line.startswith("j_")]
        assert any("running" in line for line in stages), render.stderr
        assert stages[-1].endswith("succeeded"), render.stderr
        assert len(stages) == len(set(stages)), "a stage was printed twice"
        video = re.search(r"^\s*video: (\S+)", render.stdout, re.M)
        assert video, render.stdout
        response = requests.get(video.group(1), timeout=30)
        assert response.status_code == 200
        assert response.content[4:8] == b"ftyp"
    finally:
        down = subprocess.run([dojo, "down"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    status = subprocess.run([str(BIN / "ray"), "status", f"--address={env['RAY_ADDRESS']}"],
                            env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=60)
    assert status.returncode != 0, "dojo down left the cluster running"
