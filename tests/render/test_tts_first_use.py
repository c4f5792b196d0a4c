"""A fresh node: several processes load the same TTS engine for the first time, at once."""

import subprocess
import sys

LOAD = "from pipelines.render.tts import KokoroEngine; KokoroEngine('jf_alpha')"


def test_kokoro_loads_in_parallel_processes_on_a_machine_that_never_ran_it(tmp_path):
    # A render's speech tasks start together on a new worker node: each assembles kokoro's model from
    # its part packages into the same cache on first use. Every one must load it, none may trip on
    # another's half-written file.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KOKORO_JA_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])}
    loads = [subprocess.Popen([sys.executable, "-c", LOAD], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [load.communicate(timeout=300)[1] for load in loads]
    assert [load.returncode for load in loads] == [0] * 4, "\n".join(errors)[-3000:]
