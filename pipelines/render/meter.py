"""BS.1770 integrated loudness from per-slide step energies, so a re-render measures only what changed.

ITU-R BS.1770-4 (EBU R128) integrated loudness is a function of block energies:
K-weight the samples, take the mean square over 400 ms blocks that start every
100 ms, drop blocks under −70 LUFS (absolute gate), then blocks more than 10 LU
under the loudness of the rest (relative gate), and average what is left.

Blocks overlap by 75 %, so they are stored as their four 100 ms *steps*: the
energy (sum of K-weighted squares) of each 100 ms of the track, on one grid
from the track's first sample. A block's energy is the sum of four neighbouring
steps. A slide's record is the energies of the steps it covers, the first and
last ones partial where a slide edge falls between grid lines; a neighbour's
partial step adds to the same grid step. The record depends on the slide's
samples and on where its first sample sits on the grid (``phase``), and is
cached under both (see ``cache``): a re-render K-weights only the slide that
changed, and the track's block energies, hence its integrated loudness, come
out the same as from measuring the whole track.

One approximation, bounded: the K filter is recursive, so a slide's first
milliseconds carry a little of the previous slide's last ones. Slides are
padded with silence (``pad_before``/``pad_after``) and the filter forgets within
about 20 ms (its 38 Hz high-pass has a 4 ms time constant), so with the default
pads this is below float precision.

The filter is the standard's (its analogue prototype, bilinear at the track's
rate, as libebur128 designs it), applied as an FIR of its impulse response
(0.2 s, past which it is below 1e-16) by FFT convolution: numpy alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Blocks start every STEP seconds and span STEPS_PER_BLOCK steps (BS.1770: 400 ms, 75 % overlap).
STEPS_PER_SECOND = 10
STEPS_PER_BLOCK = 4
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
#: Length of the K filter's impulse response kept (seconds).
RESPONSE_S = 0.2


@dataclass(frozen=True)
class SlideSteps:
    """K-weighted energy of each grid step a slide covers (first/last may be partial), and its peak."""

    phase: int
    energies: tuple[float, ...]
    #: Highest absolute sample value, full scale = 1.0.
    peak: float

    def to_dict(self) -> dict:
        return {"phase": self.phase, "energies": list(self.energies), "peak": self.peak}

    @classmethod
    def from_dict(cls, data: dict) -> "SlideSteps":
        return cls(int(data["phase"]), tuple(float(e) for e in data["energies"]), float(data["peak"]))


def step_samples(rate: int) -> int | None:
    """Samples per 100 ms step, or None when the rate has no whole number of them."""
    return rate // STEPS_PER_SECOND if rate % STEPS_PER_SECOND == 0 else None


def _biquad_response(b: tuple[float, ...], a: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    y = np.zeros_like(x)
    x1 = x2 = y1 = y2 = 0.0
    b0, b1, b2 = b
    _, a1, a2 = a
    for n, xn in enumerate(x.tolist()):
        yn = b0 * xn + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        x2, x1, y2, y1 = x1, xn, y1, yn
        y[n] = yn
    return y


@lru_cache(maxsize=8)
def k_filter(rate: int) -> np.ndarray:
    """Impulse response of BS.1770's K weighting (high shelf, then RLB high-pass) at ``rate``."""
    # The analogue prototype's parameters, as in libebur128; at 48 kHz they give BS.1770's coefficients.
    k = math.tan(math.pi * 1681.974450955533 / rate)
    q = 0.7071752369554196
    vh = 10 ** (3.999843853973347 / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf_b = ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0)
    shelf_a = (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)
    k = math.tan(math.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    high_a = (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)
    impulse = np.zeros(int(RESPONSE_S * rate))
    impulse[0] = 1.0
    return _biquad_response((1.0, -2.0, 1.0), high_a, _biquad_response(shelf_b, shelf_a, impulse))


def k_weighted(samples: np.ndarray, rate: int) -> np.ndarray:
    """``samples`` (int16 or float, full scale 1.0 for float) through the K filter, from rest."""
    x = samples.astype(np.float64) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float64)
    response = k_filter(rate)
    if not len(x):
        return x
    # Overlap-add in FFTs of a fixed, cache-friendly size: one FFT over a whole track is several
    # times slower per sample.
    size = 1 << max(15, (4 * len(response)).bit_length())
    hop = size - len(response) + 1
    chunks = -(-len(x) // hop)
    padded = np.zeros(chunks * hop)
    padded[: len(x)] = x
    pieces = np.fft.irfft(np.fft.rfft(padded.reshape(chunks, hop), size) * np.fft.rfft(response, size), size)
    out = np.zeros(chunks * hop + size)
    for index in range(chunks):
        out[index * hop: index * hop + size] += pieces[index]
    return out[: len(x)]


def slide_steps(samples: np.ndarray, rate: int, phase: int) -> SlideSteps:
    """The record of a slide whose first sample lies ``phase`` samples after a grid line."""
    step = step_samples(rate)
    if step is None or not 0 <= phase < step:
        raise ValueError(f"expected a rate divisible by {STEPS_PER_SECOND} and 0 <= phase < step, "
                         f"got rate {rate}, phase {phase}")
    squares = k_weighted(samples, rate) ** 2
    # Local positions of the grid lines inside the slide: the first after its start, then every step.
    edges = np.arange((step - phase) % step, len(squares), step)
    if not len(edges) or edges[0] != 0:
        edges = np.concatenate(([0], edges))
    energies = np.add.reduceat(squares, edges) if len(squares) else np.zeros(0)
    peak = float(np.abs(samples.astype(np.float64)).max() / 32768.0) if len(samples) else 0.0
    return SlideSteps(phase, tuple(energies.tolist()), peak)


def track_steps(slides: list[tuple[int, SlideSteps]], length: int, rate: int) -> np.ndarray:
    """The whole track's step energies from ``(first sample, record)`` per slide; whole steps only."""
    step = step_samples(rate)
    whole = length // step
    energies = np.zeros(whole + 2)
    for start, record in slides:
        first = start // step
        values = np.asarray(record.energies)[: max(0, whole + 1 - first)]
        energies[first:first + len(values)] += values
    return energies[:whole]


def integrated(energies: np.ndarray, rate: int) -> float:
    """Gated integrated loudness (LUFS) of a mono track from its step energies; -inf when all is gated."""
    count = len(energies) - STEPS_PER_BLOCK + 1
    if count <= 0:
        return -math.inf
    sums = np.convolve(energies, np.ones(STEPS_PER_BLOCK), "valid")
    powers = sums / (STEPS_PER_BLOCK * step_samples(rate))
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    kept = loudness > ABSOLUTE_GATE_LUFS
    if not kept.any():
        return -math.inf
    gate = -0.691 + 10 * math.log10(powers[kept].mean()) + RELATIVE_GATE_LU
    kept &= loudness > gate
    return -0.691 + 10 * math.log10(powers[kept].mean())
