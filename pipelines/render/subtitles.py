"""WebVTT and SRT sidecars: one cue per sentence, timed from the synthesized audio."""

from __future__ import annotations

from .timeline import Cue


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _clean(text: str) -> str:
    # A blank line ends a cue in both formats, and '-->' would read as a timing line.
    return " ".join(text.split()).replace("-->", "→")


def to_vtt(cues: list[Cue] | tuple[Cue, ...]) -> str:
    lines = ["WEBVTT", ""]
    for number, cue in enumerate(cues, 1):
        lines += [f"s{cue.slide}-{number}", f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}",
                  _clean(cue.text).replace("&", "&amp;").replace("<", "&lt;"), ""]
    return "\n".join(lines)


def chapters_vtt(chapters) -> str:
    """A WebVTT chapters track (``<track kind="chapters">``): one cue per chapter, its title as text."""
    lines = ["WEBVTT", ""]
    for number, chapter in enumerate(chapters, 1):
        lines += [f"chapter-{number}", f"{_clock(chapter.start, '.')} --> {_clock(chapter.end, '.')}",
                  _clean(chapter.title).replace("&", "&amp;").replace("<", "&lt;"), ""]
    return "\n".join(lines)


def to_srt(cues: list[Cue] | tuple[Cue, ...]) -> str:
    lines = []
    for number, cue in enumerate(cues, 1):
        lines += [str(number), f"{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}", _clean(cue.text), ""]
    return "\n".join(lines)


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per cue; enough to check what ``to_vtt`` wrote."""
    def seconds(clock: str) -> float:
        hours, minutes, rest = clock.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    cues = []
    blocks = text.replace("\r\n", "\n").split("\n\n")
    for block in blocks:
        lines = [line for line in block.split("\n") if line]
        for i, line in enumerate(lines):
            if "-->" in line:
                start, end = (part.strip().split(" ")[0] for part in line.split("-->"))
                cues.append((seconds(start), seconds(end), " ".join(lines[i + 1:])))
                break
    return cues
