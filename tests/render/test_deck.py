"""Deck validation: good decks load; bad ones are refused with a message naming the slide."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from PIL import Image

from actors.exceptions import InvalidInput, PayloadTooLarge
from pipelines.render.deck import Limits, load_deck, split_markdown, sniff
from pipelines.render.slides import render_slide

from .conftest import jpeg, pdf, png, script


def huge_png_header(width=50_000, height=50_000) -> bytes:
    """A PNG whose IHDR claims width x height but whose pixel data is a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def zip_of(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_markdown_deck_with_notes():
    text = "# One\n- a\nNote: 最初の文です。\n---\n# Two\n<!-- 二つ目。 -->\n---\n# Three\n"
    deck = load_deck([("talk.md", text.encode())])
    assert [s.narration for s in deck.slides] == ["最初の文です。", "二つ目。", ""]
    assert [s.kind for s in deck.slides] == ["markdown"] * 3
    assert split_markdown("---\ntitle: x\n---\n# A\n")[0][0] == "# A"


def test_images_with_yaml_script():
    deck = load_deck([("1.png", png()), ("2.jpg", jpeg())], ("s.yaml", "- 一つ目。\n- text: 二つ目。\n".encode()))
    assert [s.narration for s in deck.slides] == ["一つ目。", "二つ目。"]
    assert [s.source for s in deck.slides] == ["1.png", "2.jpg"]


def test_pdf_with_json_script_and_rasterizing():
    deck = load_deck([("deck.pdf", pdf(pages=2))], ("s.json", script({"slides": ["a", {"narration": "b"}]})))
    assert [(s.kind, s.page) for s in deck.slides] == [("pdf", 0), ("pdf", 1)]
    image = render_slide(deck.slides[1], (640, 360))
    assert image.size == (640, 360) and image.mode == "RGB"


def test_zip_of_images_in_natural_order():
    archive = zip_of({"slides/10.png": png((0, 0, 255)), "slides/2.png": png((0, 255, 0)), "__MACOSX/._x": b"junk"})
    deck = load_deck([("deck.zip", archive)], ("s.json", script(["two", "ten"])))
    assert [s.source for s in deck.slides] == ["deck.zip:slides/2.png", "deck.zip:slides/10.png"]


def test_type_is_judged_by_content_not_name():
    assert sniff(png()) == "png" and sniff(jpeg()) == "jpeg" and sniff(pdf(1)) == "pdf"
    deck = load_deck([("upload", png())], ("s.json", script(["x"])))  # no extension: content decides
    assert deck.slides[0].kind == "image"


def test_mixed_sizes_and_modes_are_normalized():
    deck = load_deck([("a.png", png(size=(300, 900), mode="RGBA", color=(1, 2, 3, 128))),
                      ("b.png", png(size=(2000, 500), mode="L", color=7))], ("s.json", script(["a", "b"])))
    for slide in deck.slides:
        image = render_slide(slide, (1920, 1080))
        assert image.size == (1920, 1080) and image.mode == "RGB"


@pytest.mark.parametrize("files, script_file, expected", [
    ([("deck.pdf", b"%PDF-1.7\n1 0 obj garbage")], ("s.json", script(["a"])), "not a readable PDF"),
    ([("slide.png", b"just some notes, not a picture\n")], ("s.json", script(["a"])), "content is Markdown text"),
    ([("slide.png", jpeg())], ("s.json", script(["a"])), "named like a PNG image but its content is a JPEG"),
    ([("a.png", png()), ("b.png", png())], ("s.json", script(["only one"])), "script has 1 entries but the deck has 2"),
    ([("big.png", huge_png_header())], ("s.json", script(["a"])), "slide 1 (big.png)"),
    ([("cut.png", png()[:60])], ("s.json", script(["a"])), "slide 1 (cut.png)"),
    ([("a.png", png())], None, "no narration"),
    ([("a.png", png())], ("s.yaml", b"just: [a mapping"), "not valid YAML/JSON"),
    ([("a.png", png())], ("s.yaml", b"plain words"), "must be a list"),
    ([("x.bin", b"\x00\x01\x02binary")], None, "not a PDF, PNG, JPEG, ZIP or Markdown"),
    ([], None, "no deck uploaded"),
])
def test_bad_decks_are_refused(files, script_file, expected):
    with pytest.raises(InvalidInput) as caught:
        load_deck(files, script_file)
    assert expected in caught.value.message


def test_huge_image_header_is_refused_before_decoding():
    data = huge_png_header()
    with pytest.raises(InvalidInput) as caught:
        load_deck([("a.png", png()), ("b.png", data)], ("s.json", script(["a", "b"])))
    assert "slide 2 (b.png)" in caught.value.message
    assert "16384" in caught.value.message
    # A smaller lie, under Pillow's own bomb guard, is still caught by our limit.
    with pytest.raises(InvalidInput, match="12000x12000 pixels"):
        load_deck([("c.png", huge_png_header(12_000, 12_000))], ("s.json", script(["a"])))


def test_zip_bomb_is_refused():
    bomb = zip_of({"slide.png": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(InvalidInput, match="ZIP bomb"):
        load_deck([("deck.zip", bomb)], ("s.json", script(["a"])))


@pytest.mark.parametrize("name", ["../../etc/passwd.png", "/etc/x.png", "..\\x.png", "a/b.png", "C:evil.png",
                                  "ok\x00.png", "..", "bad\u202egnp.exe"])
def test_path_tricks_in_file_names(name):
    with pytest.raises(InvalidInput, match="file name"):
        load_deck([(name, png())], ("s.json", script(["a"])))


@pytest.mark.parametrize("entry", ["../evil.png", "/abs.png", "a/../../b.png", "x\\..\\y.png"])
def test_path_tricks_inside_zip(entry):
    with pytest.raises(InvalidInput, match="file name"):
        load_deck([("deck.zip", zip_of({entry: png()}))], ("s.json", script(["a"])))


def test_limits_on_text_count_and_size():
    with pytest.raises(InvalidInput, match="slide 2 .*narration is 2001 characters"):
        load_deck([("a.png", png()), ("b.png", png())], ("s.json", script(["ok", "あ" * 2001])))
    with pytest.raises(InvalidInput, match="more than 3 slides"):
        load_deck([("d.pdf", pdf(pages=4))], ("s.json", script(list("abcd"))), Limits(max_slides=3))
    with pytest.raises(PayloadTooLarge):
        load_deck([("a.png", png())], ("s.json", script(["a"])), Limits(max_total_bytes=100))
    with pytest.raises(InvalidInput, match="a ZIP deck may only hold PNG or JPEG"):
        load_deck([("d.zip", zip_of({"notes.txt": b"hello"}))], ("s.json", script(["a"])))


def test_truncated_jpeg_is_refused():
    data = jpeg()
    with pytest.raises(InvalidInput, match="slide 1"):
        load_deck([("a.jpg", data[: len(data) // 2])], ("s.json", script(["a"])))
    assert Image.open(io.BytesIO(data)).size == (800, 600)
