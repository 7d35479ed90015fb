"""The torch backend's encoder calls: urgent requests (a live utterance's final) are encoded first, and
with an encode interval set, new audio waits while rows decode, then goes in once the interval has passed
(so that the running rows' tokens keep coming)."""

from __future__ import annotations

import numpy as np
import pytest

from funasr_nano import load_model
from funasr_nano.backends import Request
from funasr_nano.demo import sample
from funasr_nano.frontend.audio import load_audio
from funasr_nano.text.prompt import PromptIds

PROMPT = PromptIds([1, 2, 3], [4, 5])


@pytest.fixture
def backend():
    backend = load_model("demo", device="cpu").backend
    backend.engine.reserve(4, 512)  # room for new rows beside a running one (the cache grows by draining)
    yield backend
    backend.encode_interval_s = None


def _request(seconds: float, urgent: bool = False, budget: int = 8) -> Request:
    return Request(np.zeros(round(seconds * 16000), np.float32), PROMPT, budget, urgent=urgent)


def test_urgent_requests_are_encoded_first(backend):
    for key, seconds, urgent in (("a", 3, False), ("b", 2, False), ("final", 1, True), ("c", 1, False)):
        backend.add(key, _request(seconds, urgent))
    assert [key for key, _ in backend._next_batch()] == ["final", "a", "b", "c"]
    assert not backend._unencoded


def _speech(budget: int = 50) -> Request:
    """A demo clip: the demo model decodes it for a dozen steps or more before it stops."""
    return Request(load_audio(sample("en")), PROMPT, budget)


def test_the_interval_holds_new_audio_back_while_rows_decode(backend):
    backend.encode_interval_s = 3600.0
    backend.add("running", _speech())
    backend.step()  # the engine is idle: encoded at once
    assert not backend.engine.idle and not backend._unencoded
    backend.add("new", _request(1))
    steps = 0
    while not backend.engine.idle:
        backend.step()
        steps += 1
        assert [key for key, _ in backend._unencoded] == ["new"]  # held back: "running" decodes on
    assert steps > 3
    backend.step()  # nothing decodes any more: encoded at once
    assert not backend._unencoded


def test_new_audio_goes_in_once_the_interval_has_passed(backend):
    backend.encode_interval_s = 3600.0
    backend.add("running", _speech())
    backend.step()
    backend.add("new", _request(1))
    backend.step()
    assert backend._unencoded and not backend.engine.idle
    backend._encoded_at -= 3600.0  # as if an hour had passed
    backend.step()
    assert not backend._unencoded


def test_without_an_interval_new_audio_joins_at_the_next_step(backend):
    backend.add("running", _speech())
    backend.step()
    backend.add("new", _request(1))
    backend.step()
    assert not backend._unencoded and not backend.engine.idle


def test_the_server_spaces_its_encoder_calls():
    from funasr_nano.serve.config import ServerConfig
    from funasr_nano.serve.service import Service

    model = load_model("demo", device="cpu")
    assert model.backend.encode_interval_s is None  # the library encodes whenever slots free
    service = Service(model, ServerConfig(encode_interval_s=0.25))
    service.start()
    try:
        assert model.backend.encode_interval_s == 0.25
    finally:
        service.stop()


def test_the_encoder_graphs_padding_gives_each_row_its_own_output():
    """The CUDA-graph path pads a batch to a power of two rows and whole frame buckets and always masks;
    on the CPU (no graph) the same padded computation must give every row what the plain batch gives."""
    import torch

    model = load_model("demo", device="cpu").backend.model
    rng = np.random.default_rng(0)
    features = [torch.from_numpy(rng.normal(size=(n, 560)).astype(np.float32)) for n in (50, 17, 33)]
    padded, lengths, positions = model.graph_inputs(features)
    assert padded.shape[:2] == (4, 64) and lengths.tolist() == [50, 17, 33, 0]
    with torch.inference_mode():
        graphed = model._encode_padded(padded, lengths, positions)
        plain = model.encode(features)
    for i, audio in enumerate(plain):
        torch.testing.assert_close(graphed[i, : audio.shape[0]], audio, atol=1e-4, rtol=1e-4)


def test_encoder_graph_buckets_cover_a_minute_alone_and_30_s_segments_by_the_hundred():
    from funasr_nano.backends.torch.model import graph_shape

    assert graph_shape([688]) == (1, 704)  # L1's 41 s clip: one row
    assert graph_shape([500] * 120) == (128, 512)  # T1: 120 segments of 30 s
    assert graph_shape([500] * 256) == (256, 512)
    assert graph_shape([600] * 100) == (128, 608)
    assert graph_shape([600] * 256) is None  # past the largest graph: eager
    assert graph_shape([1025]) is None  # past a minute: eager
