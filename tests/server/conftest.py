"""Fixtures of the server tests: the tiny checkpoint's model, speech clips as WAV uploads, and one server
per test module (``base_url``) with an ``openai`` client on it. Module-scoped: each test module gets its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile
from server_helpers import MAX_NEW_TOKENS, SPEECH, running, wav_bytes

from funasr_nano import load_model
from funasr_nano.api import FunASRNano
from funasr_nano.serve.config import ServerConfig


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = soundfile.read(SPEECH, dtype="float32")
    assert rate == 16000
    return samples


@pytest.fixture(scope="module")
def clips(speech: np.ndarray) -> dict[str, bytes]:
    """Short speech clips as WAV uploads: English phrases, a Chinese phrase, a single word."""
    return {
        "en": wav_bytes(speech[int(0.5 * 16000) : int(8.0 * 16000)]),
        "zh": wav_bytes(speech[int(16.2 * 16000) : int(22.8 * 16000)]),
        "yes": wav_bytes(speech[int(8.5 * 16000) : int(10.0 * 16000)]),
    }


@pytest.fixture(scope="module")
def model(official_tiny) -> FunASRNano:
    return load_model(official_tiny.model_dir, device="cpu")


@pytest.fixture(scope="module")
def base_url(model: FunASRNano) -> Iterator[str]:
    config = ServerConfig(model_name="fun-asr-nano-tiny", max_new_tokens=MAX_NEW_TOKENS, max_audio_s=20.0,
                          max_upload_bytes=2_000_000, batch_window_s=0.3)
    with running(model, config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
