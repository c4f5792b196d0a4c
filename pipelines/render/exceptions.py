"""Errors of the render pipeline, under dojo's one base class.

Bad input is ``actors.exceptions.InvalidInput`` (a 4xx); these are failures
while rendering, which the queue retries.
"""

from __future__ import annotations

from actors.exceptions import ConfigError, DojoError


class RenderError(DojoError):
    """The render failed; the message says which step. The job is retried."""


class EncodeError(RenderError):
    """ffmpeg failed; the message ends with the last lines ffmpeg printed."""


class SynthesisError(RenderError):
    """The text-to-speech engine failed on a slide; the message names the slide and engine."""


class EngineUnavailable(ConfigError):
    """That TTS engine cannot run here; install its package or configure it as the message says."""
