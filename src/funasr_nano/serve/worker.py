"""The model's side of the server: one batcher that decodes the segments of concurrent requests
together, the request threads that read uploads and wait for their text, and the admission counter."""

from __future__ import annotations

import asyncio
import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import numpy as np

from ..api import FunASRNano
from ..decoding.longform import ScannedAudio, scan_audio
from ..decoding.streaming import TextCallback
from ..frontend.audio import load_audio
from ..frontend.vad import VadOptions
from ..result import Transcription
from .batching import BatchingBackend
from .config import ServerConfig
from .openai import busy_error


class Service:
    """The per-app state: the batcher, the request threads and the admission counter."""

    def __init__(self, model: FunASRNano, config: ServerConfig):
        self.config = config
        self.base_model = model
        self.batcher: BatchingBackend | None = None
        self.model: FunASRNano | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.active = 0
        self.served = 0
        self.started = time.time()
        self.uploading = 0  # request bodies still arriving (UploadGuard counts them)
        self.stopping = asyncio.Event()  # set when the server begins to shut down

    def start(self) -> None:
        self.batcher = BatchingBackend(self.base_model.backend, self.config.batch_window_s,
                                       self.config.batch_segments)
        # A shallow copy shares weights, tokenizer and VAD; only its backend is the shared batcher.
        self.model = copy.copy(self.base_model)
        self.model.backend = self.batcher
        self.pool = ThreadPoolExecutor(self.config.max_queue, thread_name_prefix="funasr-nano-request")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.close()

    def load(self, upload: IO[bytes]) -> np.ndarray | ScannedAudio:
        """The upload read once: with VAD, in chunks, keeping only the speech found (its segments' audio
        is read again as they are decoded, so the upload stays open until then); without, its samples.
        Audio over the duration limit is refused from its header or as soon as decoding passes the limit
        (AudioTooLongError, a 413). Blocking (a request thread)."""
        if self.config.vad:
            assert self.model is not None
            return scan_audio(upload, VadOptions(), self.config.resampler, self.model.backend.device,
                              self.config.max_audio_s)
        return load_audio(upload, resampler=self.config.resampler, max_seconds=self.config.max_audio_s)

    def transcribe(self, audio: np.ndarray | ScannedAudio, language: str | None, prompt: str | None,
                   on_text: TextCallback | None = None, word_timestamps: bool = False) -> Transcription:
        """Blocking; runs in a request thread."""
        assert self.model is not None
        return self.model.transcribe(audio, language=language, hotwords=prompt, on_text=on_text,
                                     max_new_tokens=self.config.max_new_tokens, vad=self.config.vad,
                                     word_timestamps=word_timestamps)

    def admit(self) -> None:
        """Take a place in the queue; only requests whose upload is complete ask for one."""
        if self.active >= self.config.max_queue:
            raise busy_error(f"the server is busy ({self.active} requests in progress): retry shortly", "queue_full")
        self.active += 1

    def release(self) -> None:
        self.active -= 1

