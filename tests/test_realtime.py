"""The Realtime WebSocket (GET /v1/realtime): OpenAI's transcription-session events over a live stream
of the demo model, whose decodes run on the server's worker."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
from server_helpers import get_json, running  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

import funasr_nano  # noqa: E402
from funasr_nano.serve.config import ServerConfig  # noqa: E402

DEMO = Path(__file__).parent / "data" / "demo"


@pytest.fixture(scope="module")
def model() -> funasr_nano.FunASRNano:
    return funasr_nano.load_model("demo", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def talk() -> np.ndarray:
    """Three demo clips after 1.5 s of silence each, as int16 PCM at 16 kHz."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()][:3]
    gap = np.zeros(24000, np.float32)
    parts = [gap]
    for row in rows:
        parts += [soundfile.read(DEMO / row["path"], dtype="float32")[0], gap]
    return np.round(np.concatenate(parts) * 32767).astype(np.int16)


def first_clip_samples() -> int:
    row = json.loads((DEMO / "manifest.jsonl").read_text().splitlines()[0])
    return soundfile.info(DEMO / row["path"]).frames


def appends(pcm: np.ndarray, chunk: int = 1600) -> list[str]:
    return [json.dumps({"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm[i : i + chunk].tobytes()).decode()})
            for i in range(0, pcm.size, chunk)]


def receive(ws: ClientConnection) -> dict:
    return json.loads(ws.recv(timeout=60))


def until(ws: ClientConnection, kind: str, count: int = 1) -> list[dict]:
    """Every event up to the count-th of this type."""
    seen, found = [], 0
    while found < count:
        event = receive(ws)
        seen.append(event)
        found += event["type"] == kind
    return seen


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def session_update(rate: int = 16000, turn_detection: object = "default") -> str:
    audio: dict = {"format": {"type": "audio/pcm", "rate": rate}, "transcription": {"model": "fun-asr-nano"}}
    if turn_detection != "default":
        audio["turn_detection"] = turn_detection
    return json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio}}})


def test_server_vad_session_gives_each_utterance_its_offline_text(model, talk):
    offline = [s.text.strip() for s in model.transcribe(talk.astype(np.float32) / 32768).segments]
    with running(model, ServerConfig()) as base, connect(ws_url(base)) as ws:
        assert receive(ws)["type"] == "session.created"
        ws.send(session_update())
        updated = receive(ws)
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["format"]["rate"] == 16000
        # Audio sent faster than real time lets each final supersede the partials, so the first clip
        # goes at real-time pace: its partials are asked for while it is spoken.
        middle = 24000 + first_clip_samples()
        for message in appends(talk[:middle]):
            ws.send(message)
            time.sleep(0.1)
        for message in appends(talk[middle:]):
            ws.send(message)
        events = until(ws, "conversation.item.input_audio_transcription.completed", len(offline))
        ingest = get_json(base + "/health")["live_ingest"]
    assert ingest["feeds"] == len(appends(talk[:middle])) + len(appends(talk[middle:]))  # through the ingest thread
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in completed] == offline
    for done in completed:
        deltas = [e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == done["item_id"]]
        assert "".join(deltas) == done["transcript"]
    kinds = [e["type"] for e in events]
    assert kinds.count("input_audio_buffer.speech_started") == kinds.count("input_audio_buffer.committed") == 3
    assert "conversation.item.input_audio_transcription.partial" in kinds
    assert len({e["event_id"] for e in events}) == len(events)


def test_without_turn_detection_a_commit_ends_the_item(model, talk):
    clip = talk[24000 : talk.size // 3]
    with running(model, ServerConfig()) as base, connect(ws_url(base)) as ws:
        receive(ws)
        ws.send(session_update(turn_detection=None))
        assert receive(ws)["session"]["audio"]["input"]["turn_detection"] is None
        for message in appends(clip):
            ws.send(message)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = until(ws, "conversation.item.input_audio_transcription.completed")
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    completed = events[-1]
    assert committed["item_id"] == completed["item_id"]
    assert completed["transcript"] == model.transcribe(clip.astype(np.float32) / 32768, vad=False).text.strip()


@pytest.mark.parametrize(("message", "code"), [
    ("not json", "invalid_json"),
    ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_audio"),
    ('{"type": "response.create"}', "unknown_event"),
    ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_empty"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm",
                                                                                     "rate": 44100}}}}}),
     "invalid_event"),
])
def test_a_bad_event_is_an_error_event_and_the_session_goes_on(model, message, code):
    with running(model, ServerConfig()) as base, connect(ws_url(base)) as ws:
        receive(ws)
        ws.send(message)
        error = receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == code and error["error"]["message"]
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert receive(ws)["type"] == "input_audio_buffer.cleared"


def test_the_api_key_comes_as_a_header_or_a_subprotocol(model):
    with running(model, ServerConfig(api_key="k")) as base:
        with pytest.raises(InvalidStatus), connect(ws_url(base)) as ws:
            receive(ws)  # refused before the handshake completes: a 403
        with connect(ws_url(base), additional_headers={"Authorization": "Bearer k"}) as ws:
            assert receive(ws)["type"] == "session.created"
        with connect(ws_url(base), subprotocols=["realtime", "openai-insecure-api-key.k"]) as ws:
            assert ws.subprotocol == "realtime"
            assert receive(ws)["type"] == "session.created"


def test_sessions_past_max_streams_are_refused_and_a_place_frees_on_close(model):
    with running(model, ServerConfig(max_streams=1)) as base:
        with connect(ws_url(base)) as first:
            assert receive(first)["type"] == "session.created"
            with connect(ws_url(base)) as second:
                assert receive(second)["error"]["code"] == "server_busy"
                with pytest.raises(ConnectionClosed) as closed:
                    receive(second)
            assert closed.value.rcvd.code == 1013 and "1 live sessions" in closed.value.rcvd.reason
        for _ in range(50):  # the server sees the first close a moment later
            with connect(ws_url(base)) as again:
                if receive(again)["type"] == "session.created":
                    break
                time.sleep(0.1)
        else:
            pytest.fail("the place of a closed session never freed")


def test_a_session_outlives_the_header_timeout_of_its_connection(model):
    """The HTTP connection's header timer (read_timeout_s) must not close the WebSocket it became."""
    with running(model, ServerConfig(read_timeout_s=0.5)) as base, connect(ws_url(base)) as ws:
        assert receive(ws)["type"] == "session.created"
        time.sleep(1.5)
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert receive(ws)["type"] == "input_audio_buffer.cleared"


def test_an_append_after_the_ingest_has_stopped_is_told_to_reconnect(model, talk, monkeypatch):
    """Shutting down: the ingest thread takes no more audio; the session gets one error event and a 1012 close."""
    from funasr_nano.decoding.live_ingest import Ingest, IngestClosedError

    def closed(*_: object) -> None:
        raise IngestClosedError("the server is shutting down")

    monkeypatch.setattr(Ingest, "feed", closed)
    with running(model, ServerConfig()) as base, connect(ws_url(base)) as ws:
        receive(ws)
        ws.send(session_update())
        receive(ws)
        ws.send(appends(talk[:1600])[0])
        error = receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "server_shutting_down"
        with pytest.raises(ConnectionClosed) as closing:
            receive(ws)
        assert closing.value.rcvd.code == 1012
