"""A deck as uploaded: files in, validated slides with narration out.

``load_deck(files, script)`` accepts PDF, PNG, JPEG, a ZIP of PNG/JPEG images,
or a Markdown deck (``---`` between slides, speaker notes after a ``Note:``
line or inside ``<!-- -->``). Narration comes from the script (YAML or JSON:
a list with one entry per slide) or, without a script, from the notes.

Everything is judged before anything is decoded in full or stored: the file
type by its content (a name that claims another type is refused), image
dimensions from the header, ZIP sizes and compression ratios from the
directory, text lengths, counts and total size. Every refusal is an
``InvalidInput`` whose message names the slide or file and what to change.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from urllib.parse import unquote

import yaml
from PIL import Image

from actors.exceptions import InvalidInput, PayloadTooLarge


@dataclass(frozen=True)
class Limits:
    """What a deck may be; every bound is checked before the heavy work."""

    max_total_bytes: int = 100 * 1024 * 1024
    max_slides: int = 200
    max_side: int = 16384
    max_pixels: int = 64_000_000
    max_narration_chars: int = 2000
    max_markdown_chars: int = 4000
    max_script_bytes: int = 1024 * 1024
    max_unzipped_bytes: int = 300 * 1024 * 1024
    max_zip_ratio: float = 200.0
    max_name_length: int = 255


@dataclass(frozen=True)
class Slide:
    """One slide to render: where its picture comes from and what is said over it."""

    number: int  # 1-based, as people count slides
    source: str  # for messages: "deck.pdf page 2", "slides.zip:03.png"
    kind: str  # "image", "pdf" or "markdown"
    data: bytes = field(repr=False, default=b"")  # image or whole-PDF bytes; empty for markdown
    page: int = 0  # 0-based page within a PDF
    markdown: str = ""
    narration: str = ""

    def title(self) -> str:
        """The slide's chapter title: a Markdown slide's heading (else its first line), a PDF page's
        first line of text, else "Slide N"."""
        text = self.markdown
        if self.kind == "pdf":
            text = _pdf_page_text(self.data, self.page)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        headings = [line for line in lines if line.startswith("#")]
        first = (headings or lines or [""])[0].lstrip("#").strip().lstrip("-*+> ").strip()
        return first[:100] or f"Slide {self.number}"

    def content_hash(self) -> str:
        """Identifies the picture (not the narration): equal hashes render the same still."""
        h = hashlib.sha256(f"{self.kind}\0{self.page}\0{self.markdown}\0".encode())
        h.update(self.data)
        return h.hexdigest()


@dataclass(frozen=True)
class Deck:
    slides: tuple[Slide, ...]

    def __len__(self) -> int:
        return len(self.slides)


_SIGNATURES = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
)
_EXTENSIONS = {
    "pdf": "pdf", "png": "png", "jpg": "jpeg", "jpeg": "jpeg", "zip": "zip",
    "md": "markdown", "markdown": "markdown", "txt": "markdown",
}
_DESCRIBE = {"pdf": "a PDF", "png": "a PNG image", "jpeg": "a JPEG image", "zip": "a ZIP archive",
             "markdown": "Markdown text", "text": "text", "binary": "unrecognized binary data"}


def sniff(data: bytes) -> str:
    """The file type by content: pdf, png, jpeg, zip, markdown or binary."""
    head = data[:1024]
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if b"%PDF-" in head:  # PDF allows junk before the header
        return "pdf"
    if b"\0" in head:
        return "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "markdown"


def check_name(name: str, *, allow_dirs: bool = False, limits: Limits = Limits()) -> str:
    """Refuse file names that try to escape a directory or hide characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("every uploaded file needs a file name")
    shown = name.encode("unicode_escape").decode()[:80]
    if len(name) > limits.max_name_length:
        raise InvalidInput(f"file name {shown!r} is longer than {limits.max_name_length} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise InvalidInput(f"file name {shown!r} contains control characters; rename the file")
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InvalidInput(f"file name {shown!r} is a path; upload files by their plain name")
    decoded = unquote(name)  # some clients percent-encode names ("..%2Fx.png"); judge what they mean
    if decoded != name:
        check_name(decoded, allow_dirs=allow_dirs, limits=limits)
    parts = name.split("/")
    if not allow_dirs and len(parts) > 1:
        raise InvalidInput(f"file name {shown!r} contains '/'; upload files by their plain name")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"file name {shown!r} contains '..' or an empty path segment")
    return name


def _claimed(name: str) -> str | None:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _EXTENSIONS.get(ext)


def _typed(name: str, data: bytes) -> str:
    kind = sniff(data)
    claimed = _claimed(name)
    if kind == "binary":
        raise InvalidInput(f"file {name!r} is not a PDF, PNG, JPEG, ZIP or Markdown deck (judged by its content)")
    if claimed and claimed != kind:
        raise InvalidInput(f"file {name!r} is named like {_DESCRIBE[claimed]} but its content is "
                           f"{_DESCRIBE[kind]}; upload the real file or fix its name")
    return kind


def check_image(data: bytes, where: str, limits: Limits = Limits()) -> tuple[int, int]:
    """Read the size from the header, refuse huge ones, then decode once to prove the file is whole."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
            width, height = image.size
    except Image.DecompressionBombError:
        raise InvalidInput(f"{where}: the image header claims an enormous size; export it at most "
                           f"{limits.max_side}x{limits.max_side} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{where}: the image cannot be read ({exc}); re-export it as PNG or JPEG") from None
    if width < 1 or height < 1 or width > limits.max_side or height > limits.max_side \
            or width * height > limits.max_pixels:
        raise InvalidInput(f"{where}: the image is {width}x{height} pixels; at most {limits.max_side} per side "
                           f"and {limits.max_pixels // 1_000_000} megapixels are accepted (1920x1080 is plenty)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"{where}: the image is damaged or truncated ({exc}); re-export it") from None
    finally:
        image.close()
    return width, height


def _pdf_pages(data: bytes, name: str) -> int:
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        raise InvalidInput(f"file {name!r} is not a readable PDF ({exc}); re-export it "
                           f"(password-protected PDFs are not supported)") from None
    try:
        pages = len(document)
        for index in range(pages):
            width, height = document[index].get_size()
            if not (1 <= width <= 14400 and 1 <= height <= 14400):
                raise InvalidInput(f"slide {index + 1} ({name} page {index + 1}): page size {width:.0f}x{height:.0f} "
                                   f"points is outside 1..14400")
    finally:
        document.close()
    if pages == 0:
        raise InvalidInput(f"file {name!r} is a PDF with no pages")
    return pages


def _pdf_page_text(data: bytes, page: int) -> str:
    """A PDF page's text (empty when it has none or cannot be read: a title is never worth failing for)."""
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(data)
        try:
            textpage = document[page].get_textpage()
            return textpage.get_text_range()
        finally:
            document.close()
    except (pypdfium2.PdfiumError, IndexError):
        return ""


def _zip_images(data: bytes, name: str, limits: Limits) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"file {name!r} is not a readable ZIP archive ({exc})") from None
    with archive:
        entries = [info for info in archive.infolist()
                   if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                   and not info.filename.rsplit("/", 1)[-1].startswith(".")]
        if len(entries) > limits.max_slides:
            raise InvalidInput(f"{name}: the archive holds {len(entries)} files; at most {limits.max_slides} slides")
        total = 0
        for info in entries:
            check_name(info.filename, allow_dirs=True, limits=limits)
            total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_zip_ratio or total > limits.max_unzipped_bytes:
                raise InvalidInput(f"{name}:{info.filename}: unpacks to {info.file_size} bytes from "
                                   f"{info.compress_size} (a ZIP bomb?); zip the images without recompression "
                                   f"or upload them one by one")
        images = []
        for info in sorted(entries, key=lambda i: _natural(i.filename)):
            with archive.open(info) as member:
                # The header's size may lie: never read more than it promised.
                blob = member.read(info.file_size + 1)
            if len(blob) > info.file_size:
                raise InvalidInput(f"{name}:{info.filename}: the entry is bigger than its header says")
            images.append((f"{name}:{info.filename}", blob))
        return images


def _natural(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


_NOTE_LINE = re.compile(r"^\s*(notes?|speaker notes?)\s*:\s*", re.IGNORECASE)


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 3 and not stripped.strip("-")


def _without_comments(chunk: str) -> tuple[str, list[str]]:
    """``chunk`` without its ``<!-- -->`` comments, and their texts (one pass; an unclosed one stays text)."""
    kept, notes, pos = [], [], 0
    while (start := chunk.find("<!--", pos)) != -1:
        end = chunk.find("-->", start + 4)
        if end == -1:  # no comment closes after here: the rest is text
            break
        kept.append(chunk[pos:start])
        notes.append(chunk[start + 4:end].strip())
        pos = end + 3
    kept.append(chunk[pos:])
    return "".join(kept), notes


def split_markdown(text: str) -> list[tuple[str, str]]:
    """``(visible markdown, speaker notes)`` for each ``---``-separated slide.

    Linear in the text's length whatever it holds: the whole upload is parsed in the API
    replica before any per-slide limit applies (regular expressions spanning lines or
    searching for a comment's end backtrack quadratically on crafted input).
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    # A leading front-matter block (--- ... ---) is metadata, not a slide.
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1 and ":" in text[4:end] and "#" not in text[4:end]:
            text = text[end + 5:]
    chunks: list[list[str]] = [[]]
    for line in text.split("\n"):
        if _is_separator(line):
            chunks.append([])
        else:
            chunks[-1].append(line)
    slides = []
    for chunk_lines in chunks:
        chunk, notes = _without_comments("\n".join(chunk_lines))
        lines = chunk.split("\n")
        for i, line in enumerate(lines):
            if _NOTE_LINE.match(line):
                notes.append("\n".join([_NOTE_LINE.sub("", line), *lines[i + 1:]]).strip())
                lines = lines[:i]
                break
        visible = "\n".join(lines).strip()
        if visible or notes:
            slides.append((visible, "\n".join(n for n in notes if n).strip()))
    return slides


def parse_script(name: str, data: bytes, limits: Limits = Limits()) -> list[str]:
    """The narration entries of a YAML/JSON script: a list, or ``{slides: [...]}``."""
    if len(data) > limits.max_script_bytes:
        raise PayloadTooLarge(f"script {name!r} is {len(data)} bytes; at most {limits.max_script_bytes}")
    if sniff(data) != "markdown":  # i.e. not UTF-8 text
        raise InvalidInput(f"script {name!r} is not UTF-8 text; upload a YAML or JSON file")
    text = data.decode("utf-8").lstrip("\ufeff")
    try:
        doc = json.loads(text) if text.lstrip()[:1] in ("[", "{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"script {name!r} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(doc, dict):
        doc = doc.get("slides")
    if not isinstance(doc, list):
        raise InvalidInput(f"script {name!r} must be a list with one narration per slide, "
                           f"e.g. ['First slide.', 'Second slide.'] or {{slides: [{{text: ...}}]}}")
    entries = []
    for number, entry in enumerate(doc, 1):
        if isinstance(entry, dict):
            entry = entry.get("narration", entry.get("text", entry.get("notes")))
        if entry is None:
            entry = ""
        if not isinstance(entry, (str, int, float)):
            raise InvalidInput(f"slide {number}: script entry must be text, got {type(entry).__name__}")
        entries.append(str(entry).strip())
    return entries


def load_deck(files: list[tuple[str, bytes]], script: tuple[str, bytes] | None = None,
              limits: Limits = Limits()) -> Deck:
    """Validate uploaded deck files (and an optional script) into a ``Deck``; raise InvalidInput."""
    if not files:
        raise InvalidInput("no deck uploaded; send one PDF, Markdown deck or ZIP, or PNG/JPEG images in order")
    total = sum(len(data) for _, data in files) + (len(script[1]) if script else 0)
    if total > limits.max_total_bytes:
        raise PayloadTooLarge(f"the upload is {total} bytes; at most {limits.max_total_bytes} are accepted")
    for name, _ in files:
        check_name(name, limits=limits)
    if script:
        check_name(script[0], limits=limits)

    raw: list[dict] = []
    for name, data in files:
        kind = _typed(name, data)
        if kind == "pdf":
            pages = _pdf_pages(data, name)
            if len(raw) + pages > limits.max_slides:
                raise InvalidInput(f"the deck has more than {limits.max_slides} slides; split it")
            raw.extend({"kind": "pdf", "source": f"{name} page {p + 1}", "data": data, "page": p}
                       for p in range(pages))
        elif kind in ("png", "jpeg"):
            raw.append({"kind": "image", "source": name, "data": data})
        elif kind == "zip":
            for source, blob in _zip_images(data, name, limits):
                if sniff(blob) not in ("png", "jpeg"):
                    raise InvalidInput(f"{source}: a ZIP deck may only hold PNG or JPEG images")
                raw.append({"kind": "image", "source": source, "data": blob})
        else:
            text = data.decode("utf-8")
            for index, (visible, notes) in enumerate(split_markdown(text), 1):
                raw.append({"kind": "markdown", "source": f"{name} slide {index}", "markdown": visible,
                            "notes": notes})
        if len(raw) > limits.max_slides:
            raise InvalidInput(f"the deck has more than {limits.max_slides} slides; split it")
    if not raw:
        raise InvalidInput("the deck has no slides")

    if script:
        narration = parse_script(script[0], script[1], limits)
        if len(narration) != len(raw):
            raise InvalidInput(f"the script has {len(narration)} entries but the deck has {len(raw)} slides; "
                               f"give exactly one narration per slide (\"\" for a silent slide)",
                               slides=len(raw), script_entries=len(narration))
    elif any(item["kind"] != "markdown" for item in raw):
        raise InvalidInput("the deck has no narration: upload a script (YAML/JSON list, one entry per slide) "
                           "or use a Markdown deck with speaker notes")
    else:
        narration = [item["notes"] for item in raw]

    slides = []
    for number, (item, text) in enumerate(zip(raw, narration), 1):
        where = f"slide {number} ({item['source']})"
        if len(text) > limits.max_narration_chars:
            raise InvalidInput(f"{where}: narration is {len(text)} characters; at most "
                               f"{limits.max_narration_chars} per slide — split the slide")
        if item["kind"] == "image":
            check_image(item["data"], where, limits)
        if len(item.get("markdown", "")) > limits.max_markdown_chars:
            raise InvalidInput(f"{where}: slide text is {len(item['markdown'])} characters; at most "
                               f"{limits.max_markdown_chars} fit on a slide")
        slides.append(Slide(number=number, source=item["source"], kind=item["kind"], data=item.get("data", b""),
                            page=item.get("page", 0), markdown=item.get("markdown", ""), narration=text))
    return Deck(tuple(slides))
