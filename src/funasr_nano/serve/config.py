"""The server's settings, in a module of their own so the command line reads their defaults without
importing the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "fun-asr-nano"  # the id /v1/models lists; any requested `model` is accepted
    api_key: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's own limit
    max_audio_s: float = 3600.0
    max_queue: int = 64  # requests admitted at once (uploaded, waiting or decoding); more get 429
    max_uploads: int = 64  # request bodies arriving at once; more get 429
    max_streams: int = 64  # live (Realtime WebSocket) sessions at once; more are refused
    read_timeout_s: float = 30.0  # an upload that sends nothing for this long gets 408
    min_upload_bytes_per_s: float = 8000.0  # ...and one slower than this, after its first read_timeout_s
    max_new_tokens: int | None = None  # per segment; None derives it from the segment duration
    batch_window_s: float = 0.01
    encode_interval_s: float | None = 0.1  # torch: TorchBackend.encode_interval_s (None: none)
    vad: bool = True  # False decodes each upload as one segment, as the official model does
    resampler: str = "torchaudio"  # how uploads at other rates reach 16 kHz (see resample.py)

