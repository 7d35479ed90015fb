"""The browser page at /, driven in a real headless Chromium (Debian's, through Playwright): a fake
microphone plays a wav of demo clips into the page's AudioWorklet, whose PCM16 goes over the Realtime
WebSocket; the page must show the demo model's text for each clip. Its file upload must give SRT cues.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
sync_api = pytest.importorskip("playwright.sync_api")
from server_helpers import running  # noqa: E402

import funasr_nano  # noqa: E402
from benchmarks.accuracy import edit_distance  # noqa: E402
from funasr_nano.serve.config import ServerConfig  # noqa: E402

DEMO = Path(__file__).parent / "data" / "demo"
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt install chromium)")
# The closed network refuses Chromium's background connections; the fake devices stand in for a microphone.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def model() -> funasr_nano.FunASRNano:
    return funasr_nano.load_model("demo", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    """Two English demo clips, each after 1.5 s of silence and with 2 s after the last, as a PCM16 wav."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()][:2]
    gap = np.zeros(24000, np.float32)
    parts = [gap]
    for row in rows:
        parts += [soundfile.read(DEMO / row["path"], dtype="float32")[0], gap]
    path = tmp_path_factory.mktemp("page") / "talk.wav"
    soundfile.write(path, np.concatenate([*parts, gap[:8000]]), 16000, subtype="PCM_16")
    return path


def browser(playwright, *flags: str):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *flags])


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_microphone_shows_partials_then_each_clip_s_text(model, talk):
    offline = [s.text.strip() for s in model.transcribe(talk).segments]
    assert len(offline) == 2
    with running(model, ServerConfig()) as base, sync_api.sync_playwright() as playwright:
        chromium = browser(playwright, f"--use-file-for-fake-audio-capture={talk}%noloop")
        try:
            page = chromium.new_page()
            page.goto(base + "/")
            page.select_option("#language", "en")
            page.click("#start")
            page.wait_for_selector("#lines p.partial", timeout=30_000)
            page.wait_for_function("document.querySelectorAll('#lines p.final').length >= 2", timeout=60_000)
            screenshot(page, "page-live.png")
            finals = page.locator("#lines p.final").all()
            texts = [line.inner_text() for line in finals]
            assert page.locator("#status.error").count() == 0
        finally:
            chromium.close()
    times = [re.match(r"\[(\d\d:\d\d\.\d) → (\d\d:\d\d\.\d)\]\s*(.*)", text) for text in texts]
    assert all(times), texts
    # The browser resamples the fake microphone (16 kHz file, 48 kHz capture, 16 kHz AudioContext), so the
    # samples are near, not equal, to the file's: at most one word of each clip may differ.
    for shown, text in zip([m.group(3) for m in times], offline, strict=True):  # type: ignore[union-attr]
        assert edit_distance(text.split(), shown.split()) <= 1, (shown, text)
    starts = [m.group(1) for m in times]  # type: ignore[union-attr]
    assert starts == sorted(starts) and starts[0] >= "00:01.0"  # the first clip starts after 1.5 s


def test_a_file_upload_gives_srt_to_download(model, talk):
    offline = [s.text.strip() for s in model.transcribe(talk).segments]
    with running(model, ServerConfig()) as base, sync_api.sync_playwright() as playwright:
        chromium = browser(playwright)
        try:
            page = chromium.new_page()
            page.goto(base + "/")
            page.set_input_files("#file", str(talk))
            page.select_option("#format", "srt")
            page.click("#upload")
            page.wait_for_selector("#download:not([hidden])", timeout=60_000)
            screenshot(page, "page-upload.png")
            with page.expect_download() as download:
                page.click("#download")
            assert download.value.suggested_filename == "talk.srt"
            srt = Path(download.value.path()).read_text(encoding="utf-8")
        finally:
            chromium.close()
    cues = [cue.splitlines() for cue in srt.strip().split("\n\n")]
    assert all(cue[1].count(" --> ") == 1 for cue in cues)
    assert " ".join(" ".join(cue[2:]) for cue in cues) == " ".join(offline)
