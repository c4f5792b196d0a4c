"""Turn every slide into an RGB picture of exactly the output size.

ffmpeg fails (9.x) or silently cuts the video (5.x) when stills differ in size
or pixel format, so every slide goes through ``letterbox`` here: fitted
inside the frame, aspect kept, bars filled, converted to RGB. PDF pages are
rasterized with pypdfium2 at the scale that fits the frame; Markdown slides
are drawn with Pillow in Noto Sans CJK JP (from the ``noto-cjk-sans-jp-regular``
package), so Japanese renders without system fonts.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .deck import Slide

BACKGROUND = (0, 0, 0)
PAPER = (250, 250, 247)
INK = (28, 30, 36)
ACCENT = (32, 96, 192)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    import noto_cjk_sans_jp_regular

    return ImageFont.truetype(str(noto_cjk_sans_jp_regular.FONT_PATH), size)


def letterbox(image: Image.Image, size: tuple[int, int], background=BACKGROUND) -> Image.Image:
    """``image`` fitted inside ``size`` with bars, as RGB."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.size == size:
        return image
    scale = min(size[0] / image.width, size[1] / image.height)
    fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(fitted, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", size, background)
    canvas.paste(image, ((size[0] - fitted[0]) // 2, (size[1] - fitted[1]) // 2))
    return canvas


def _open_image(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # deck.check_image already bounded the size; Pillow's own guard is lower.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        image.load()
    return ImageOps.exif_transpose(image)


def _pdf_page(data: bytes, page: int, size: tuple[int, int]) -> Image.Image:
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        pdf_page = document[page]
        width, height = pdf_page.get_size()
        scale = min(size[0] / width, size[1] / height)
        bitmap = pdf_page.render(scale=scale, fill_color=(255, 255, 255, 255))
        return bitmap.to_pil()
    finally:
        document.close()


def _wrap(draw: ImageDraw.ImageDraw, text: str, face, width: int) -> list[str]:
    """Greedy wrap that works for Japanese (no spaces) and English alike."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for token in _tokens(paragraph):
            trial = current + token
            if current and draw.textlength(trial, font=face) > width:
                lines.append(current.rstrip())
                current = token.lstrip()
            else:
                current = trial
        lines.append(current.rstrip())
    return lines


def _tokens(text: str) -> list[str]:
    tokens, word = [], ""
    for ch in text:
        if ch.isascii() and not ch.isspace():
            word += ch
            continue
        if word:
            tokens.append(word)
            word = ""
        tokens.append(ch)
    if word:
        tokens.append(word)
    return tokens


def draw_markdown(markdown: str, size: tuple[int, int]) -> Image.Image:
    """A plain, readable slide: '#' lines as the title, '-'/'*' lines as bullets, the rest as text."""
    width, height = size
    unit = height / 1080
    image = Image.new("RGB", size, PAPER)
    draw = ImageDraw.Draw(image)
    margin = int(110 * unit)
    y = int(90 * unit)
    title_face, body_face = font(max(8, int(76 * unit))), font(max(8, int(46 * unit)))
    for raw in markdown.split("\n"):
        line = raw.strip()
        if not line:
            y += int(24 * unit)
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            face = title_face if level <= 1 else font(max(8, int(58 * unit)))
            for text in _wrap(draw, line.lstrip("#").strip(), face, width - 2 * margin):
                draw.text((margin, y), text, font=face, fill=ACCENT if level <= 1 else INK)
                y += int(face.size * 1.35)
            y += int(20 * unit)
            continue
        indent, face = 0, body_face
        if line[:2] in ("- ", "* ", "+ "):
            draw.ellipse((margin, y + face.size * 0.45, margin + 14 * unit, y + face.size * 0.45 + 14 * unit),
                         fill=ACCENT)
            line, indent = line[2:], int(40 * unit)
        for text in _wrap(draw, line.replace("**", "").replace("`", ""), face, width - 2 * margin - indent):
            draw.text((margin + indent, y), text, font=face, fill=INK)
            y += int(face.size * 1.45)
        if y > height - margin:
            break
    return image


def render_slide(slide: Slide, size: tuple[int, int] = (1920, 1080)) -> Image.Image:
    """The slide as an RGB image of exactly ``size``."""
    if slide.kind == "markdown":
        return draw_markdown(slide.markdown, size)
    if slide.kind == "pdf":
        return letterbox(_pdf_page(slide.data, slide.page, size), size)
    return letterbox(_open_image(slide.data), size)


def draw_caption(image: Image.Image, text: str) -> Image.Image:
    """A copy of ``image`` with ``text`` burned in at the bottom (for burn-in subtitles)."""
    if not text:
        return image
    out = image.copy()
    draw = ImageDraw.Draw(out, "RGBA")
    face = font(max(10, int(out.height * 0.042)))
    lines = _wrap(draw, text, face, int(out.width * 0.86))[:3]
    line_h = int(face.size * 1.3)
    box_h = line_h * len(lines) + int(face.size * 0.8)
    top = out.height - box_h - int(out.height * 0.04)
    draw.rectangle((0, top, out.width, top + box_h), fill=(0, 0, 0, 170))
    y = top + int(face.size * 0.4)
    for line in lines:
        x = (out.width - draw.textlength(line, font=face)) / 2
        draw.text((x, y), line, font=face, fill=(255, 255, 255, 255))
        y += line_h
    return out


def png_bytes(image: Image.Image) -> bytes:
    """PNG at low compression: ffmpeg decodes each still once, and writing fast matters more."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def thumbnail_jpeg(image: Image.Image, width: int = 640) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((width, width * image.height // max(image.width, 1)))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
