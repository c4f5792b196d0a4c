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
    assert [p.name for p in rows[1].deck] == ["s1.png", "s2.png"] and rows[1].script.name == "script.json"
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
def test_batch_through_the_api(api, decks):
    write_csv(decks / "m.csv", "deck,resolution,speed\na.md,320x180,\nb.md,320x180,1.2\n")
    out = decks / "results.parquet"
    assert batch.main([str(decks / "m.csv"), "--url", api, "--out", str(out), "--timeout", "180"]) == 0
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
    assert "directly on Ray" in done.stderr
    _check_results(decks / "out.parquet", 1)
