"""Benchmark batch renders through ``ray job submit`` against the same renders over the API.

    python bench/batch.py [--decks 20] [--slides 5] [--cpus 4]

Starts a Ray head of its own (dashboard and job server on, token auth, dojo's
API deployed: ``tests/batch/head.py``), generates ``--decks`` decks of
``--slides`` slides, and in one run:

- ``api_s``: every deck uploaded with ``Client.render`` (``POST /v1/renders``)
  and waited for, until the last render succeeded;
- ``batch_s``: the same decks (another per-run tag, so no render cache is hit)
  as one manifest through ``JobSubmissionClient.submit_job`` (what ``ray job
  submit`` calls), until Ray's job is SUCCEEDED;
- ``batch_overhead_s_per_deck`` = (batch_s - api_s) / decks (aim <= 0.3 s);
- ``stop_to_all_cancelled_s``: a third batch, stopped (``stop_job``) once its
  first render runs, until none of its renders is queued or running (aim <= 5 s).

Progress goes to stderr; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tests.batch.head import RayHead  # noqa: E402

UNFINISHED = ("queued", "running", "retrying", "scheduled")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_decks(folder: Path, decks: int, slides: int, tag: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for d in range(decks):
        # The tag is in the narration too: the audio cache is keyed on what is spoken, not on the slide.
        text = "\n---\n".join(f"# {tag} {d}-{s}\nNote: {tag}、{d}枚目のデッキ、{s}枚目のスライドです。"
                              for s in range(slides))
        (folder / f"deck{d:02d}.md").write_text(text + "\n", encoding="utf-8")
        names.append(f"deck{d:02d}.md")
    (folder / "manifest.csv").write_text("deck,resolution\n" + "".join(f"{n},640x360\n" for n in names),
                                         encoding="utf-8")
    return names


def through_api(head: RayHead, folder: Path, names: list[str]) -> float:
    from concurrent.futures import ThreadPoolExecutor  # imports `queue`: only once bench/ is off the path

    from serve.client import Client

    client = Client(head.api, head.api_token)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda n: client.render(str(folder / n), resolution="640x360"), names))
    for job in jobs:
        done = client.wait(job["id"], progress=False)
        if done["status"] != "succeeded":
            raise SystemExit(f"render {job['id']} {done['status']}: {done.get('error')}")
    return time.perf_counter() - started


def through_ray_job(head: RayHead, folder: Path) -> float:
    started = time.perf_counter()
    submission = head.jobs.submit_job(entrypoint="python -m pipelines.batch manifest.csv",
                                      runtime_env={"working_dir": str(folder)})
    while (status := str(head.jobs.get_job_status(submission).value)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if status != "SUCCEEDED":
        raise SystemExit(f"batch {status}:\n{head.jobs.get_job_logs(submission)[-3000:]}")
    return elapsed


def stop_batch(head: RayHead, folder: Path) -> float:
    submission = head.jobs.submit_job(entrypoint="python -m pipelines.batch manifest.csv",
                                      runtime_env={"working_dir": str(folder)})
    while ": running" not in (logs := head.jobs.get_job_logs(submission)):
        time.sleep(0.1)
    batch = next(line.split()[1].rstrip(":") for line in logs.splitlines() if line.startswith("batch j_"))
    started = time.perf_counter()
    head.jobs.stop_job(submission)
    while any(c["status"] in UNFINISHED for c in head.children(batch)):
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decks", type=int, default=20)
    parser.add_argument("--slides", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=4, help="CPUs of the head (renders run there)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dojo-bench-batch-"))
    say(f"starting a Ray head with its job server ({args.cpus} CPUs)")
    head = RayHead(num_cpus=args.cpus).start()
    try:
        run = secrets.token_hex(3)
        # Both paths then find the runners started and the speech models loaded.
        say("warming up: one render over the API")
        through_api(head, tmp / "warm", make_decks(tmp / "warm", 1, args.slides, f"warm-{run}"))
        names = make_decks(tmp / "api", args.decks, args.slides, f"api-{run}")
        say(f"{args.decks} decks of {args.slides} slides over the API")
        api_s = through_api(head, tmp / "api", names)
        make_decks(tmp / "batch", args.decks, args.slides, f"batch-{run}")
        say("the same through ray job submit")
        batch_s = through_ray_job(head, tmp / "batch")
        make_decks(tmp / "stop", args.decks, args.slides, f"stop-{run}")
        say("a batch stopped while its first render runs")
        stop_s = stop_batch(head, tmp / "stop")
    finally:
        head.stop()
    print(json.dumps({"decks": args.decks, "slides": args.slides, "api_s": round(api_s, 2),
                      "batch_s": round(batch_s, 2),
                      "batch_overhead_s_per_deck": round((batch_s - api_s) / args.decks, 3),
                      "stop_to_all_cancelled_s": round(stop_s, 2)}))


if __name__ == "__main__":
    main()
