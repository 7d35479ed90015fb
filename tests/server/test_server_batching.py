"""Batching across requests: requests in flight together decode in one batch, and requests that arrive
mid-decode join it, with the texts (streams included) of requests decoded alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
from server_helpers import direct, get_json, running, spied  # noqa: E402

from funasr_nano.serve.config import ServerConfig  # noqa: E402


def test_concurrent_requests_decode_together(base_url, client, model, clips):
    """Requests in flight together decode in one batch, with unchanged results."""
    names = ["en", "zh", "yes", "en"]
    before = get_json(base_url + "/health")["batching"]
    with ThreadPoolExecutor(len(names)) as pool:
        texts = list(pool.map(
            lambda n: client.audio.transcriptions.create(model="m", file=(f"{n}.wav", clips[n])).text, names))
    after = get_json(base_url + "/health")["batching"]
    assert texts == [direct(model, clips[n]).text for n in names]
    assert after["requests"] - before["requests"] == len(names)
    assert after["largest_batch"] > 1  # segments of different requests decoded together


def test_requests_join_a_running_decode_with_unchanged_results(model, clips):
    """Requests that arrive mid-decode join it: same texts, streams included."""
    spy = spied(model)
    names = ["en", "zh", "yes", "en", "zh", "yes"]
    with running(spy, ServerConfig(max_new_tokens=12, batch_window_s=0)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)

        def ask(index: int) -> str:
            time.sleep(0.05 * index)  # staggered: most arrive while an earlier request decodes
            name = names[index]
            if index % 2:
                stream = client.audio.transcriptions.create(model="m", file=(f"{name}.wav", clips[name]), stream=True)
                return list(stream)[-1].text
            return client.audio.transcriptions.create(model="m", file=(f"{name}.wav", clips[name])).text

        with ThreadPoolExecutor(len(names)) as pool:
            texts = list(pool.map(ask, range(len(names))))
    expected = [model.transcribe(clips[n], max_new_tokens=12, on_text=(lambda d: None) if i % 2 else None).text
                for i, n in enumerate(names)]
    assert texts == expected
    assert spy.backend.joined > 0  # segments that joined a decode already running
