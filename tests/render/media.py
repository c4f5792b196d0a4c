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
