"""Narration loudness: measured by ITU-R BS.1770 and brought to a target once, on the whole track.

Why a fixed gain, ``meter`` for the speech and ffmpeg's ``ebur128`` for the
published track, not ``loudnorm``:

- ``ebur128`` is the reference implementation of BS.1770-4 / EBU R128
  (integrated loudness with gating, true peak by 4× oversampling) and ships
  in the ffmpeg binary we already run; it measures the encoded track, what the
  manifest states. The speech before its gain is measured by ``meter`` (the
  same BS.1770 figures to within 0.05 LU, tested against ``ebur128``), because
  it can keep each slide's share and measure only the slides that changed.
- A single gain (``volume``) changes no sample's time, so A/V sync stays exact
  to the sample. ``loudnorm``'s dynamic mode resamples to 192 kHz and shapes
  the gain over time; its linear mode is a fixed gain too, but gives up (and
  falls back to dynamic) whenever the peak target would be crossed.
- Peaks the gain would push over the ceiling are caught by ``alimiter`` with
  its delay compensated (``latency=1``): it touches only the few
  milliseconds around a peak, so integrated loudness moves by a few
  hundredths of a LU, and the stream keeps its length and alignment.

A track whose peaks the limiter had to hold back comes out a little quieter than
asked; it is encoded again with that much more gain (at most ``MAX_PASSES``
encodes in all, each beside the slides' segment pass).

The gain comes from the whole track's loudness, so a deck whose slides came
half from the cache is as loud as a fresh render; but the speech is measured
slide by slide (``speech``, ``meter``): each slide's 100 ms step energies are
cached by its samples' hash, and the track's gated integrated loudness is
computed from them as from one pass over the track. A re-render K-weights only
the slide that changed. The encoded track is still measured whole, by ffmpeg's
meter, for what the manifest states and for the limiter's shortfall.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

import numpy as np

from actors.jobs import JobCancelled

from . import meter
from .exceptions import EncodeError
from .process import ProcessFailed, ffmpeg_exe, run

#: Spoken-word target for streaming and podcasts; broadcast (EBU R128) is −23.
DEFAULT_TARGET_LUFS = -16.0
#: Highest true peak the published file may reach.
TRUE_PEAK_LIMIT_DBTP = -1.0
#: Where the limiter sits: below the limit by the overshoot AAC and resampling add (~0.5 dB).
LIMITER_CEILING_DBFS = -2.0
#: How close to the target a track must land (LU), and how many encodes may try (each ~0.2 s per minute).
TOLERANCE_LU = 0.5
MAX_PASSES = 3
#: Targets a render may ask for (LUFS).
TARGET_RANGE = (-40.0, -5.0)

_INTEGRATED = re.compile(r"Integrated loudness:\s*\n\s*I:\s*(-?[\d.]+|-inf) LUFS")
_TRUE_PEAK = re.compile(r"True peak:\s*\n\s*Peak:\s*(-?[\d.]+|-inf) dBFS")


def _rounded(value: float) -> float | None:
    """A level for a manifest: 0.01 dB, None for silence's -inf (JSON has no infinity)."""
    return None if math.isinf(value) else round(value, 2)


@dataclass(frozen=True)
class Loudness:
    """Integrated loudness (LUFS) and true peak (dBTP) of a track; ``-inf`` for silence."""

    integrated_lufs: float
    true_peak_dbtp: float

    def to_dict(self) -> dict:
        return {"integrated_lufs": _rounded(self.integrated_lufs), "true_peak_dbtp": _rounded(self.true_peak_dbtp)}


def measure_command(path: str, ffmpeg: str) -> list[str]:
    return [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "info", "-i", path, "-map", "0:a:0",
            "-af", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"]


def parse_summary(text: str) -> Loudness:
    """The summary ``ebur128`` logs at the end of a pass."""
    integrated, peak = _INTEGRATED.search(text), _TRUE_PEAK.search(text)
    if not integrated or not peak:
        raise EncodeError(f"ffmpeg's loudness meter printed no summary: {text.strip()[-500:]}")
    return Loudness(float(integrated.group(1)), float(peak.group(1)))


def measure(path: str, ffmpeg: str, cancelled: threading.Event | None = None, timeout: float = 300) -> Loudness:
    """BS.1770 integrated loudness and true peak of the first audio track of ``path``."""
    try:
        return parse_summary(run(measure_command(path, ffmpeg), cancelled=cancelled, timeout=timeout))
    except ProcessFailed as exc:
        raise EncodeError(f"ffmpeg's loudness meter failed ({exc.returncode}): {exc.tail.strip()[-500:]}") from None


@dataclass(frozen=True)
class Speech:
    """The narration before its gain: integrated loudness (LUFS) and sample peak (dBFS); ``-inf`` for silence."""

    integrated_lufs: float
    sample_peak_dbfs: float

    def to_dict(self) -> dict:
        return {"integrated_lufs": _rounded(self.integrated_lufs), "sample_peak_dbfs": _rounded(self.sample_peak_dbfs)}


def speech(track: np.ndarray, rate: int, starts: list[int], cache, wav: str | None = None,
           cancelled: threading.Event | None = None) -> Speech:
    """Loudness of the narration ``track`` whose slides begin at the samples ``starts``.

    Each slide's step energies come from ``cache`` (a ``RenderCache``) or are computed and stored
    there. At a rate without whole 100 ms steps (11025 Hz) ffmpeg measures ``wav`` instead.
    """
    step = meter.step_samples(rate)
    peak = float(np.abs(track.astype(np.float64)).max() / 32768.0) if len(track) else 0.0
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if step is None:
        return Speech(measure(wav, ffmpeg_exe(), cancelled).integrated_lufs, peak_db)
    records = []
    for start, end in zip(starts, [*starts[1:], len(track)]):
        if cancelled is not None and cancelled.is_set():
            raise JobCancelled("loudness measure stopped: the job was cancelled")
        samples = track[start:end]
        key = cache.steps_key(samples.tobytes(), rate, start % step)
        record = cache.get_steps(key)
        if record is None:
            record = meter.slide_steps(samples, rate, start % step)
            cache.put_steps(key, record)
        records.append((start, record))
    return Speech(meter.integrated(meter.track_steps(records, len(track), rate), rate), peak_db)


def gain_db(measured: Loudness | Speech, target_lufs: float) -> float:
    """The fixed gain that brings ``measured`` to ``target_lufs``; none for silence."""
    if math.isinf(measured.integrated_lufs):
        return 0.0
    return round(target_lufs - measured.integrated_lufs, 2)


def shortfall_db(after: Loudness, target: float | None) -> float:
    """How far an encoded track fell short of ``target`` (beyond ``TOLERANCE_LU``); 0 when close enough.

    A speech track with a high crest factor (Piper's peaks reach full scale at −19 LUFS) loses
    loudness to the limiter; encoding again with that much more gain lands on the target.
    """
    if target is None or math.isinf(after.integrated_lufs):
        return 0.0
    gap = target - after.integrated_lufs
    return round(gap, 2) if abs(gap) > TOLERANCE_LU else 0.0


def filter_chain(gain: float, sample_rate: int) -> str:
    """The narration's filters: gain, the output rate, then a delay-compensated peak limiter."""
    ceiling = 10 ** (LIMITER_CEILING_DBFS / 20)
    # The limiter runs at the output rate, where its sample peaks sit closer to the true peaks.
    return (f"volume={gain:.2f}dB,aresample={sample_rate},"
            f"alimiter=limit={ceiling:.4f}:level=false:latency=1:attack=1:release=50")


def check_target(value) -> float | None:
    """A render's ``loudness`` option: a LUFS number in range, or ``"off"`` (None)."""
    if value is None:
        return DEFAULT_TARGET_LUFS
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    try:
        target = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"loudness must be a LUFS number such as -16 or 'off', got {value!r}") from None
    low, high = TARGET_RANGE
    if not low <= target <= high or math.isnan(target):
        raise ValueError(f"loudness must be between {low:g} and {high:g} LUFS (or 'off'), got {value!r}")
    return target
