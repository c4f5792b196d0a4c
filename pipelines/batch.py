"""Batch renders: every deck of a manifest, through the API or straight into the queue on Ray.

    python -m pipelines.batch MANIFEST [--out results.parquet] [--url URL | --direct] [--timeout S]
    ray job submit --working-dir . -- python -m pipelines.batch decks/manifest.csv

The manifest is a Parquet or CSV table (read with pyarrow), one render per row:

- ``deck`` (required): a path, or several separated by ``;`` (e.g. PNG slides in order);
- ``script`` (optional): a YAML/JSON narration script;
- option columns (optional, empty cells mean the default): ``engine``, ``voice``,
  ``speed``, ``resolution``, ``width``, ``height``, ``pad_before``, ``pad_after``,
  ``subtitles``, ``burn_in``, ``fps`` (see ``pipelines.render.job.RenderOptions``).

A relative path is looked up next to the manifest first, then in the current
directory (inside ``ray job submit --working-dir .`` that is the uploaded copy).

Every row is checked before anything is submitted (file present, columns known,
options valid, the deck itself valid, as the API would check it); the first bad
row stops the run with ``row N: ...`` and exit status 2, and nothing is queued.

Where it submits:

- through the API (the default): ``serve.client.Client`` with ``--url`` or
  ``DOJO_URL`` / the local settings, uploading each deck to ``POST /v1/renders``;
- directly on Ray (``--direct``, or on its own when the process is already
  connected to Ray or ``RAY_ADDRESS`` is set, as inside a Ray job): the inputs
  go into the object store of this process's settings (``DOJO_STATE_DIR``,
  ``DOJO_S3_*``: the same store the cluster's render workers read, which the
  defaults are on a one-machine cluster) and the jobs into the queue actor
  through ``actors.facade.Queues``.

A tqdm bar counts finished decks. The results table (Parquet, ``--out``,
default ``results.parquet``) has one row per manifest row, in order:
``row, job_id, deck, status, duration_s, output_url, error`` (``duration_s`` is
the video's length; ``output_url`` a signed URL of the video, relative to the
API for the local store). The exit status is 0 when every render succeeded, 1
when any failed or was cancelled, 2 for a bad manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FINAL = ("succeeded", "failed", "cancelled")
OPTION_COLUMNS = ("engine", "voice", "speed", "resolution", "width", "height", "pad_before", "pad_after",
                  "subtitles", "burn_in", "fps")
COLUMNS = ("deck", "script", *OPTION_COLUMNS)
RESULT_COLUMNS = ("row", "job_id", "deck", "status", "duration_s", "output_url", "error")


class ManifestError(ValueError):
    """The manifest is unusable; the message names the row or column and what to fix."""


@dataclass
class Row:
    number: int  # 1-based data row (the header is not counted)
    deck: list[Path]
    script: Path | None
    options: dict
    label: str  # the deck cell as written
    payload: dict | None = field(default=None, repr=False)  # direct mode: the stored job payload


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _resolve(cell: str, base: Path, row: int, column: str) -> Path:
    path = Path(cell.strip()).expanduser()
    candidates = [path] if path.is_absolute() else [base / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise ManifestError(f"row {row}: {column} file {cell.strip()!r} not found (looked at {tried})")


def read_table(path: str | os.PathLike):
    """The manifest as a pyarrow Table (Parquet by magic bytes or suffix, else CSV)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} not found")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    try:
        if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        # Every column as text: the options are parsed (and checked) by RenderOptions.
        names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={name: "string" for name in names}, strings_can_be_null=True))
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"manifest {str(path)!r} is neither Parquet nor CSV that pyarrow can read: {exc}") from None


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """Parse and check every row (files, columns, options, and each deck as the API checks it)."""
    from actors.exceptions import DojoError
    from pipelines.render.job import RenderOptions
    from pipelines.render.routes import validate_render

    table = read_table(path)
    base = Path(path).resolve().parent
    columns = [name.strip() for name in table.column_names]
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise ManifestError(f"manifest column(s) {unknown} unknown; columns are {list(COLUMNS)}")
    if "deck" not in columns:
        raise ManifestError(f"the manifest needs a 'deck' column; it has {columns}")
    if table.num_rows == 0:
        raise ManifestError("the manifest has no rows")
    rows = []
    for number, record in enumerate(table.to_pylist(), 1):
        record = {key.strip(): value for key, value in record.items()}
        cell = record.get("deck")
        if _blank(cell):
            raise ManifestError(f"row {number}: 'deck' is empty; give a path, or several separated by ';'")
        decks = [_resolve(part, base, number, "deck") for part in str(cell).split(";") if part.strip()]
        script = None if _blank(record.get("script")) else _resolve(str(record["script"]), base, number, "script")
        options = {}
        for name in OPTION_COLUMNS:
            value = record.get(name)
            if not _blank(value):
                options[name] = value.strip() if isinstance(value, str) else value
        try:
            RenderOptions.from_dict(options)
            files = [(p.name, p.read_bytes()) for p in decks]
            validate_render(files, (script.name, script.read_bytes()) if script else None, options)
        except DojoError as exc:
            raise ManifestError(f"row {number} ({cell}): {exc}") from None
        rows.append(Row(number, decks, script, options, str(cell)))
    return rows


def should_go_direct(flag: bool) -> bool:
    if flag:
        return True
    try:
        import ray

        if ray.is_initialized():
            return True
    except ImportError:
        return False
    return bool(os.environ.get("RAY_ADDRESS"))


def _bar(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="decks", unit="deck", disable=not show)


def _result(row: Row, job_id: str | None, job: dict | None, url: str | None, error: str | None) -> dict:
    result = (job or {}).get("result") if isinstance((job or {}).get("result"), dict) else {}
    message = error
    if message is None and job and job.get("status") != "succeeded":
        message = (job.get("error") or {}).get("message") or job.get("status")
    return {"row": row.number, "job_id": job_id, "deck": row.label, "status": (job or {}).get("status", "failed"),
            "duration_s": result.get("duration_s"), "output_url": url, "error": message}


def run_api(rows: list[Row], url: str | None = None, timeout: float | None = None, progress: bool = True,
            poll_s: float = 0.5) -> list[dict]:
    """Upload every deck to ``POST /v1/renders``, then wait for all; results in row order."""
    from serve.client import ApiError, Client

    client = Client(url=url)
    ids: dict[int, str] = {}
    results: dict[int, dict] = {}
    for row in rows:
        try:
            job = client.render([str(p) for p in row.deck], str(row.script) if row.script else None, **row.options)
            ids[row.number] = job["id"]
        except ApiError as exc:  # checked already; this is the server disagreeing (e.g. other limits)
            results[row.number] = _result(row, None, None, None, f"refused by the API: {exc}")
    by_number = {row.number: row for row in rows}
    deadline = None if timeout is None else time.monotonic() + timeout
    with _bar(len(rows), progress) as bar:
        bar.update(len(results))
        pending = dict(ids)
        while pending:
            for number, job_id in list(pending.items()):
                job = client.get(job_id)
                if job["status"] in FINAL:
                    url_ = None
                    if job["status"] == "succeeded":
                        video = client.outputs(job_id)["urls"].get("video")
                        url_ = video if not video or video.startswith("http") else client.url + video
                    results[number] = _result(by_number[number], job_id, job, url_, None)
                    del pending[number]
                    bar.update(1)
            if pending:
                if deadline and time.monotonic() > deadline:
                    for number, job_id in pending.items():
                        results[number] = {**_result(by_number[number], job_id, client.get(job_id), None,
                                                     f"not finished after {timeout}s"), "status": "timeout"}
                    break
                time.sleep(poll_s)
    return [results[row.number] for row in rows]


def _connect_ray() -> None:
    """Join the cluster: RAY_ADDRESS (set inside a Ray job), else the local head ``dojo up`` started."""
    import ray

    if not ray.is_initialized():
        from serve.launcher import connect  # sets Ray's token auth mode before ray reads its config

        connect()


def run_direct(rows: list[Row], timeout: float | None = None, progress: bool = True, poll_s: float = 0.5,
               settings=None) -> list[dict]:
    """Store the inputs and enqueue the renders through ``Queues`` (this process is on the Ray cluster)."""
    from actors.facade import Queues
    from actors.settings import Settings
    from actors.storage import LocalStore, store_from_settings
    from pipelines.render.routes import delete_inputs, store_inputs, validate_render

    _connect_ray()
    settings = settings or Settings.from_env()
    store = store_from_settings(settings)
    for row in rows:
        files = [(p.name, p.read_bytes()) for p in row.deck]
        script = (row.script.name, row.script.read_bytes()) if row.script else None
        _, options = validate_render(files, script, row.options)
        row.payload = store_inputs(store, files, script, options)

    def url_of(key: str | None) -> str | None:
        if not key:
            return None
        url = store.signed_url(key)
        return f"http://{settings.host}:{settings.port}{url}" if isinstance(store, LocalStore) else url

    async def main() -> list[dict]:
        queues = Queues(settings)
        try:
            jobs = await queues.enqueue([{"type": "render", "payload": row.payload} for row in rows])
        except BaseException:
            for row in rows:
                delete_inputs(store, [*row.payload["deck"], *filter(None, [row.payload.get("script")])])
            raise
        ids = {row.number: job["id"] for row, job in zip(rows, jobs)}
        by_number = {row.number: row for row in rows}
        results: dict[int, dict] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        with _bar(len(rows), progress) as bar:
            pending = dict(ids)
            while pending:
                states = await asyncio.gather(*(queues.get(job_id) for job_id in pending.values()))
                for (number, job_id), job in zip(list(pending.items()), states):
                    if job["status"] in FINAL:
                        result = job.get("result") if isinstance(job.get("result"), dict) else {}
                        results[number] = _result(by_number[number], job_id, job, url_of(result.get("video")), None)
                        del pending[number]
                        bar.update(1)
                if pending:
                    if deadline and time.monotonic() > deadline:
                        for number, job_id in pending.items():
                            results[number] = {**_result(by_number[number], job_id, None, None,
                                                         f"not finished after {timeout}s"), "status": "timeout"}
                        break
                    await asyncio.sleep(poll_s)
        return [results[row.number] for row in rows]

    return asyncio.run(main())


def write_results(results: list[dict], out: str | os.PathLike) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("job_id", pa.string()), ("deck", pa.string()),
                        ("status", pa.string()), ("duration_s", pa.float64()), ("output_url", pa.string()),
                        ("error", pa.string())])
    table = pa.Table.from_pylist([{k: r.get(k) for k in RESULT_COLUMNS} for r in results], schema=schema)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.batch", description=__doc__.split("\n")[0])
    parser.add_argument("manifest", help="Parquet or CSV table with a 'deck' column (see the module docstring)")
    parser.add_argument("--out", default="results.parquet", help="results table (Parquet; default results.parquet)")
    parser.add_argument("--url", help="dojo API (default: DOJO_URL or the local settings)")
    parser.add_argument("--direct", action="store_true",
                        help="enqueue straight into the queue on Ray (automatic inside a Ray job)")
    parser.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.url and args.direct:
        parser.error("--url and --direct exclude each other")
    try:
        rows = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    direct = not args.url and should_go_direct(args.direct)
    print(f"{len(rows)} deck(s) from {args.manifest}, {'directly on Ray' if direct else 'through the API'}",
          file=sys.stderr)
    if direct:
        results = run_direct(rows, timeout=args.timeout, progress=not args.no_progress)
    else:
        results = run_api(rows, url=args.url, timeout=args.timeout, progress=not args.no_progress)
    write_results(results, args.out)
    ok = sum(r["status"] == "succeeded" for r in results)
    print(f"{ok}/{len(results)} succeeded; results in {args.out}", file=sys.stderr)
    for r in results:
        if r["status"] != "succeeded":
            print(f"  row {r['row']} ({r['deck']}): {r['status']}: {r['error']}", file=sys.stderr)
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
