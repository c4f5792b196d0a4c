"""``python -m pipelines.batch``: manifest checks, and real renders through the API and directly on Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import batch

from .conftest import png

DECK_A = "# 一\nNote: 一枚目です。\n---\n# 二\nNote: 二枚目です。\n"
DECK_B = "# 三\nNote: 別のデッキです。\n"


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def decks(tmp_path):
    (tmp_path / "a.md").write_text(DECK_A, encoding="utf-8")
    (tmp_path / "b.md").write_text(DECK_B, encoding="utf-8")
    (tmp_path / "s1.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "s2.png").write_bytes(png((0, 0, 200)))
    (tmp_path / "script.json").write_text('["赤です。", "青です。"]', encoding="utf-8")
    return tmp_path


def test_csv_and_parquet_manifests_parse(decks):
    write_csv(decks / "m.csv", "deck,script,speed,resolution\na.md,,1.2,320x180\ns1.png;s2.png,script.json,,\n")
    rows = batch.read_manifest(decks / "m.csv")
    assert [r.label for r in rows] == ["a.md", "s1.png;s2.png"]
    assert rows[0].options == {"speed": "1.2", "resolution": "320x180"} and rows[0].script is None
    assert rows[1].deck == ["s1.png", "s2.png"] and rows[1].script[0] == "script.json"
    assert rows[0].files == [("a.md", DECK_A.encode())]
    pq.write_table(pa.table({"deck": ["b.md"], "speed": [0.9], "subtitles": [False]}), decks / "m.parquet")
    [row] = batch.read_manifest(decks / "m.parquet")
    assert row.options == {"speed": 0.9, "subtitles": False}


@pytest.mark.parametrize("text,message", [
    ("deck\na.md\nmissing.md\n", "row 2: deck file 'missing.md' not found"),
    ("deck,colour\na.md,red\n", "column(s) ['colour'] unknown"),
    ("deck,speed\na.md,1.0\nb.md,fast\n", "row 2 (b.md): render option 'speed' must be float"),
    ("deck,resolution\na.md,huge\n", "row 1 (a.md): resolution must look like 1920x1080"),
    ("deck,script\na.md,\ns1.png;s2.png,a.md\n", "row 2 (s1.png;s2.png)"),
    ("deck\n\n", "no rows"),
    ("deck,key\na.md,k1\nb.md,k1\n", "row 2: key 'k1' is also row 1's"),
    ("deck\ndojo:inputs/none/deck.md\n", "row 1: deck 'dojo:inputs/none/deck.md': no such object"),
    ("script\nscript.json\n", "needs a 'deck' column"),
])
def test_bad_manifests_fail_fast_naming_the_row(decks, text, message, capsys):
    write_csv(decks / "m.csv", text)
    with pytest.raises(batch.ManifestError, match=None) as caught:
        batch.read_manifest(decks / "m.csv")
    assert message in str(caught.value), str(caught.value)
    assert batch.main([str(decks / "m.csv"), "--out", str(decks / "r.parquet"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (decks / "r.parquet").exists()


def test_a_text_file_renamed_png_is_named_by_row(decks):
    (decks / "fake.png").write_text("not an image")
    write_csv(decks / "m.csv", "deck\na.md\nfake.png\n")
    with pytest.raises(batch.ManifestError, match=r"row 2 \(fake.png\)"):
        batch.read_manifest(decks / "m.csv")


def test_row_keys_follow_the_key_column_else_the_row_and_its_bytes(decks):
    write_csv(decks / "m.csv", "deck,key,speed\na.md,,\na.md,,1.1\nb.md,mine,\n")
    first = batch.read_manifest(decks / "m.csv")
    assert first[2].key == "mine" and first[0].key.startswith("h:") and first[0].key != first[1].key
    assert [r.key for r in batch.read_manifest(decks / "m.csv")] == [r.key for r in first]
    (decks / "a.md").write_text(DECK_A + "\n---\n# 三\n", encoding="utf-8")
    assert batch.read_manifest(decks / "m.csv")[0].key != first[0].key  # the file's bytes count


def test_an_https_deck_is_downloaded_and_a_missing_one_names_its_row(decks):
    import http.server
    import threading

    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(decks))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        write_csv(decks / "m.csv", f"deck\n{base}/a.md\n")
        [row] = batch.read_manifest(decks / "m.csv")
        assert row.files == [("a.md", DECK_A.encode())]
        write_csv(decks / "m.csv", f"deck\n{base}/a.md\n{base}/gone.md\n")
        with pytest.raises(batch.ManifestError, match=r"row 2: deck 'http://.*/gone.md': the server answered 404"):
            batch.read_manifest(decks / "m.csv")
    finally:
        server.shutdown()
        server.server_close()


def _check_results(path: Path, expected_rows: int) -> list[dict]:
    table = pq.read_table(path)
    assert table.column_names == list(batch.RESULT_COLUMNS)
    rows = table.to_pylist()
    assert len(rows) == expected_rows
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["job_id"].startswith("j_") and row["duration_s"] > 1 and row["error"] is None
        assert "sig=" in row["output_url"]
    return rows


@pytest.mark.ray
def test_batch_through_the_api(api, decks, monkeypatch):
    from serve.cli import main as dojo

    write_csv(decks / "m.csv", "deck,resolution,speed\na.md,320x180,\nb.md,320x180,1.2\n")
    out = decks / "results.parquet"
    monkeypatch.setenv("DOJO_URL", api)  # as `dojo --url` would, but undone after the test
    dojo(["batch", str(decks / "m.csv"), "--out", str(out), "--timeout", "180"])  # SystemExit unless all succeeded
    rows = _check_results(out, 2)
    assert [r["deck"] for r in rows] == ["a.md", "b.md"] and rows[0]["output_url"].startswith(api)
    import urllib.request

    with urllib.request.urlopen(rows[0]["output_url"], timeout=30) as response:
        assert response.read(12)[4:8] == b"ftyp"


@pytest.mark.ray
def test_batch_direct_on_ray(api, decks):
    write_csv(decks / "m.csv", "deck,script,resolution\ns1.png;s2.png,script.json,320x180\n")
    out = decks / "direct.parquet"
    assert batch.main([str(decks / "m.csv"), "--direct", "--out", str(out), "--timeout", "180", "--no-progress"]) == 0
    [row] = _check_results(out, 1)
    assert row["output_url"].startswith(api)


@pytest.mark.ray
def test_batch_as_a_separate_driver_with_ray_address(api, ray_cluster, decks):
    """What ``ray job submit`` runs: a fresh process with RAY_ADDRESS, relative paths from its cwd."""
    manifest = write_csv(decks / "m.csv", "deck,resolution\nb.md,320x180\n")
    address = ray_cluster.get_runtime_context().gcs_address
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-m", "pipelines.batch", manifest.name, "--out", "out.parquet",
                           "--timeout", "180", "--no-progress"], cwd=decks, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch j_" in done.stderr and done.stdout.strip().splitlines()[-1].startswith("results: http")
    _check_results(decks / "out.parquet", 1)


def test_the_batch_summary_is_one_row_per_manifest_row_and_fills_the_ledger(tmp_path, monkeypatch):
    """``render.batch``'s callback without Ray: children matched to rows by id order, reused rows kept."""
    import io

    from actors.jobs import local_context
    from actors.settings import Settings
    from actors.objects import store_from_settings
    from pipelines.batch import job as batch_job

    monkeypatch.setenv("DOJO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOJO_PUBLIC_URL", "https://dojo.example.com/")
    monkeypatch.setenv("DOJO_URL_TTL", "900")
    store = store_from_settings(Settings.from_env())
    store.put_bytes("renders/j_old/video.mp4", b"old")
    store.put_bytes("renders/j_2/video.mp4", b"new")
    payload = {"rows": [
        {"row": 1, "key": "k1", "deck": "a.md", "reused": {"job_id": "j_old", "video": "renders/j_old/video.mp4",
                                                           "duration_s": 3.0}},
        {"row": 2, "key": "k2", "deck": "b.md", "render": {"deck": ["inputs/u_1/deck-000.md"]}},
        {"row": 3, "key": "k3", "deck": "c.md", "render": {"deck": ["inputs/u_2/deck-000.md"]}}]}
    outcomes = [  # as the actor lists them; ids ascend in enqueue order
        {"id": "j_3", "type": "render", "status": "failed", "result": None, "error": {"message": "bad slide"}},
        {"id": "j_2", "type": "render", "status": "succeeded", "result": {"video": "renders/j_2/video.mp4",
                                                                            "duration_s": 4.5}, "error": None}]
    result = batch_job.summarize(local_context("render.batch", job_id="j_batch"), payload, outcomes)
    assert result == {"results": "batches/j_batch/results.parquet", "rows": 3, "reused": 1, "succeeded": 2,
                      "failed": 1}
    rows = pq.read_table(io.BytesIO(store.get_bytes(result["results"]))).to_pylist()
    assert [(r["row"], r["job_id"], r["status"], r["reused"], r["error"]) for r in rows] == [
        (1, "j_old", "succeeded", True, None), (2, "j_2", "succeeded", False, None), (3, "j_3", "failed", False,
                                                                                      "bad slide")]
    assert rows[1]["output_url"].startswith("https://dojo.example.com/v1/objects/renders/j_2/video.mp4?")
    assert batch_job.recorded(store, "k2")["job_id"] == "j_2" and batch_job.recorded(store, "k3") is None
    store.delete("renders/j_2/video.mp4")
    assert batch_job.recorded(store, "k2") is None  # a ledger entry whose video is gone is not reused


def test_signed_url_expiry_is_bounded(monkeypatch):
    from actors.exceptions import ConfigError
    from actors.settings import Settings

    monkeypatch.setenv("DOJO_URL_TTL", str(365 * 86400))
    with pytest.raises(ConfigError, match="DOJO_URL_TTL must be within 60..604800"):
        Settings.from_env()


def test_out_takes_an_s3_uri_through_pyarrow(s3_store, s3_server, monkeypatch):
    """``--out s3://...``: the results table goes through pyarrow's filesystems (here a real SeaweedFS)."""
    from pipelines.batch.driver import write_out

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    endpoint = s3_server["endpoint"].split("://", 1)[1]
    write_out(b"PAR1-table", f"s3://{s3_store.bucket}/runs/results.parquet?endpoint_override={endpoint}&scheme=http"
                             "&region=us-east-1")
    assert s3_store.get_bytes("runs/results.parquet") == b"PAR1-table"
