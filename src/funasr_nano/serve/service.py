"""The model's side of the server: the worker that owns the model, the request threads that read
uploads and wait for their text, and the admission counter."""

from __future__ import annotations

import asyncio
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import numpy as np

from ..api import FunASRNano, TextCallback, transcription
from ..decoding.live_ingest import Ingest
from ..decoding.pieces import DecodedRecording
from ..decoding.scheduler import RecordingDone, TextDelta
from ..frontend.audio import load_audio
from ..frontend.prepared import ScannedAudio, scan_audio
from ..frontend.vad import VadOptions
from ..options import TranscribeOptions
from ..result import Transcription
from .config import ServerConfig
from .openai import busy_error
from .worker import VAD_DEVICE, Worker


class Service:
    """The per-app state: the worker that owns the model, the request threads and the admission counter."""

    def __init__(self, model: FunASRNano, config: ServerConfig):
        self.config = config
        self.base_model = model
        self.worker: Worker | None = None
        self.ingest: Ingest | None = None  # feeds the live sessions' audio
        self.pool: ThreadPoolExecutor | None = None
        self.active = 0
        self.served = 0
        self.started = time.time()
        self.uploading = 0  # request bodies still arriving (UploadGuard counts them)
        self.streams = 0  # live sessions open
        self.stopping = asyncio.Event()  # set when the server begins to shut down

    def start(self) -> None:
        _tune_for_serving(self.base_model, self.config.encode_interval_s)
        self.worker = Worker(self.base_model, self.config.batch_window_s)
        self.ingest = Ingest()
        self.pool = ThreadPoolExecutor(self.config.max_queue, thread_name_prefix="funasr-nano-request")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.ingest is not None:
            self.ingest.close()
        if self.worker is not None:
            self.worker.close()

    def load(self, upload: IO[bytes]) -> np.ndarray | ScannedAudio:
        """The upload read once: with VAD, in chunks, keeping only the speech found (its segments' audio
        is read again as they are decoded, so the upload stays open until then); without, its samples.
        Audio over the duration limit is refused from its header or as soon as decoding passes the limit
        (AudioTooLongError, a 413). Blocking (a request thread)."""
        if self.config.vad:
            return scan_audio(upload, VadOptions(), self.config.resampler, VAD_DEVICE, self.config.max_audio_s)
        return load_audio(upload, resampler=self.config.resampler, max_seconds=self.config.max_audio_s)

    def transcribe(self, audio: np.ndarray | ScannedAudio, language: str | None, prompt: str | None,
                   on_text: TextCallback | None = None, word_timestamps: bool = False) -> Transcription:
        """Blocking, on a request thread: submits the recording to the worker, cuts its pieces as the
        worker takes them, waits for the result. ``on_text`` is called on the worker thread."""
        assert self.worker is not None
        model = self.base_model
        options = TranscribeOptions(language=language, hotwords=prompt, max_new_tokens=self.config.max_new_tokens,
                                    vad=self.config.vad, resampler=self.config.resampler,
                                    word_timestamps=word_timestamps)
        settings = model.settings(options, stream_text=on_text is not None)
        recording = model.recording(object(), audio, settings, VAD_DEVICE)
        results: queue.SimpleQueue[object] = queue.SimpleQueue()

        def deliver(output: object) -> None:
            if isinstance(output, TextDelta):
                if on_text is not None:
                    on_text(output.text)
            elif isinstance(output, RecordingDone):
                results.put(output.result)
            elif isinstance(output, BaseException):  # what broke the decode
                results.put(output)

        self.worker.submit(recording, deliver).produce()
        result = results.get()
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, DecodedRecording)
        return transcription(result, settings.language)

    def admit(self) -> None:
        """Take a place in the queue; only requests whose upload is complete ask for one."""
        if self.active >= self.config.max_queue:
            raise busy_error(f"the server is busy ({self.active} requests in progress): retry shortly", "queue_full")
        self.active += 1

    def release(self) -> None:
        self.active -= 1


def _tune_for_serving(model: FunASRNano, encode_interval_s: float | None) -> None:
    from ..backends.torch import TorchBackend

    if not isinstance(model.backend, TorchBackend):
        return
    model.backend.encode_interval_s = encode_interval_s
    if model.backend.torch_device.type == "cuda":
        import torch

        model.backend.model.use_encoder_graphs()  # many small encoder calls: one launch each
        # The GPU does the model's work; what torch runs on the CPU is small (each live stream's VAD, on
        # request threads at once), and intra-op threads for every such call oversubscribe the cores.
        torch.set_num_threads(1)
