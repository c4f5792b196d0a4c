"""Checks of a rendered video with PyAV (an independent libav build)."""

from __future__ import annotations

import numpy as np
import av


def inspect(path) -> dict:
    """Decode every packet of the file; return codecs, durations, slide-change times and the audio."""
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        info = {
            "video_codec": video.codec_context.name,
            "profile": video.codec_context.profile,
            "pix_fmt": video.codec_context.pix_fmt,
            "audio_codec": sound.codec_context.name,
            "channels": sound.codec_context.channels,
            "sample_rate": sound.codec_context.sample_rate,
            "duration": container.duration / 1e6,
            "video_duration": float(video.duration * video.time_base),
            "audio_duration": float(sound.duration * sound.time_base),
        }
        frames, changes, previous = [], [], None
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            color = tuple(int(v) for v in rgb[rgb.shape[0] // 4, rgb.shape[1] // 2] // 64)
            if color != previous:
                changes.append((round(float(frame.time), 3), color, frame.key_frame))
                previous = color
            frames.append(float(frame.time))
        container.seek(0)
        chunks = [frame.to_ndarray().astype(np.float32).reshape(-1) for frame in container.decode(audio=0)]
    info["frame_times"] = frames
    info["changes"] = changes
    info["audio"] = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return info


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0


def lag_s(decoded: np.ndarray, reference: np.ndarray, rate: int, start: float, end: float,
          max_lag_s: float = 0.1) -> float:
    """How late ``decoded`` plays ``reference`` inside ``[start, end)`` seconds (cross-correlation, same rate).

    A/V sync in one number per slide: the picture changes exactly at the slide starts (checked
    on frames), so a lag near zero in every slide means sound and picture share one clock.
    """
    a, b = int(start * rate), int(end * rate)
    ref = reference[a:b].astype(np.float64)
    pad = int(max_lag_s * rate)
    lo = max(0, a - pad)
    sig = decoded[lo:b + pad].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(sig) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(sig, n) * np.conj(np.fft.rfft(ref, n)), n)
    offset = a - lo  # where the reference sits in ``sig`` at zero lag
    lags = np.arange(-min(pad, offset), pad + 1)
    best = lags[int(np.argmax(corr[(offset + lags) % n]))]
    return float(best) / rate


def reference_track(store, deck_slides, options: dict, rate: int) -> np.ndarray:
    """The narration track the job muxed (rebuilt from its audio cache), as floats at ``rate``."""
    from pipelines.render import timeline
    from pipelines.render.audio import resample
    from pipelines.render.cache import RenderCache
    from pipelines.render.job import RenderOptions
    from pipelines.render.tts import engine_class

    opts = RenderOptions.from_dict(options)
    cache = RenderCache(store)
    engine_id = engine_class(opts.engine).cache_id(opts.voice)
    clips = [cache.get_audio(cache.audio_key(engine_id, opts.speed, text)) for text in deck_slides]
    tl, track = timeline.build(clips, fps=opts.fps, pad_before=opts.pad_before, pad_after=opts.pad_after)
    return resample(track, tl.sample_rate, rate).astype(np.float32) / 32768.0
