"""Writers: srt and vtt parsed back and checked against the readability limits, plus txt, tsv, json."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from subtitles import Cues, parse_srt, parse_vtt

from funasr_nano.errors import UsageError
from funasr_nano.output.formats import ALL, FORMATS, formats_for, get_writer, render, write_outputs
from funasr_nano.output.subtitles import CueLimits, display_width, subtitle_cues
from funasr_nano.result import Segment, Transcription

ENGLISH = ("The quick brown fox jumps over the lazy dog near the river bank, and then it runs away into "
           "the forest. Nobody saw it again! Later that evening the farmer counted his chickens twice.")
CHINESE = "今天天气很好，我们去公园散步吧。明天可能会下雨，所以要记得带伞，不然会被淋湿的。好的。"
MIXED = "我们用 Fun-ASR-Nano 做字幕, it handles <tags> & ampersands. 好用吗？很好用！"


def transcription() -> Transcription:
    segments = [
        Segment(0.5, 12.0, ENGLISH),
        Segment(12.0, 20.5, CHINESE),  # shares its start with the previous end: a split segment
        Segment(22.0, 22.6, "Yes."),
        Segment(25.0, 25.5, ""),  # nothing said: no cue, no row
        Segment(3700.0, 3712.0, MIXED),  # past one hour
    ]
    text = " ".join(s.text for s in segments)
    return Transcription(text, segments, None, 3720.0, timings={"decode": 1.23456})


def unspace(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check_cues(cues: Cues, segments: list[Segment], limits: CueLimits) -> None:
    assert cues
    for (start, end, lines), (next_start, _, _) in zip(cues, cues[1:] + [(float("inf"), 0, [])], strict=True):
        assert start < end <= next_start + 1e-9  # ordered, no overlap
        assert end - start <= limits.max_duration + 0.001
        assert 1 <= len(lines) <= limits.max_lines
        assert all(line and display_width(line) <= limits.max_line_width for line in lines)
        assert any(s.start - 0.001 <= start and end <= s.end + 0.001 for s in segments)  # inside its segment
    # no text lost or invented: the cues hold exactly the segments' text
    cue_text = "".join("".join(lines) for _, _, lines in cues)
    assert unspace(cue_text) == unspace("".join(s.text for s in segments))


@pytest.mark.parametrize("limits", [CueLimits(), CueLimits(max_line_width=20, max_lines=1, max_duration=3.0)])
def test_srt_parses_back_within_the_limits(limits):
    result = transcription()
    cues = parse_srt(render(result, "srt", limits))
    check_cues(cues, result.segments, limits)
    assert cues[-1][1] == pytest.approx(3712.0)


def test_vtt_parses_back_within_the_limits_and_escapes_markup():
    result = transcription()
    text = render(result, "vtt")
    unescaped = [(s, e, [html.unescape(line) for line in lines]) for s, e, lines in parse_vtt(text)]
    check_cues(unescaped, result.segments, CueLimits())
    assert "&lt;tags&gt; &amp; ampersands" in text


def test_cues_end_at_sentences_and_clauses_rather_than_where_they_fill_up():
    cues = subtitle_cues([Segment(10.0, 18.0, CHINESE)])
    assert ["".join(c.lines) for c in cues] == [
        "今天天气很好，我们去公园散步吧。", "明天可能会下雨，所以要记得带伞，不然会被淋湿的。好的。"
    ]
    # the line break falls at the comma
    assert cues[1].lines == ("明天可能会下雨，所以要记得带伞，", "不然会被淋湿的。好的。")


def test_cue_times_are_proportional_to_text_within_the_segment():
    cues = subtitle_cues([Segment(10.0, 20.0, "aaaa bbbb. " * 6)], CueLimits(max_line_width=10, max_lines=1))
    assert [c.lines for c in cues] == [("aaaa bbbb.",)] * 6
    durations = [c.end - c.start for c in cues]
    assert durations == pytest.approx([10 / 6] * 6)
    assert cues[0].start == 10.0 and cues[-1].end == pytest.approx(20.0)


def test_a_word_longer_than_a_line_gets_a_cue_of_its_own():
    url = "https://example.com/" + "x" * 60
    cues = subtitle_cues([Segment(0.0, 4.0, f"see {url} now")])
    assert [c.lines for c in cues] == [("see",), (url,), ("now",)]


def test_slow_speech_is_still_cut_to_the_duration_limit():
    text = "one two three four five six seven eight"
    cues = subtitle_cues([Segment(0.0, 28.0, text)])
    assert all(c.end - c.start <= 7.0 + 1e-9 for c in cues) and len(cues) >= 28 / 7
    assert " ".join(line for c in cues for line in c.lines) == text


def test_txt_has_one_segment_per_line_and_tsv_whisper_columns():
    result = transcription()
    assert render(result, "txt").splitlines() == [ENGLISH, CHINESE, "Yes.", MIXED]
    rows = render(result, "tsv").splitlines()
    assert rows[0] == "start\tend\ttext"
    assert rows[1] == f"500\t12000\t{ENGLISH}"
    assert rows[-1].startswith("3700000\t3712000\t") and len(rows) == 5


def test_json_keeps_text_times_and_flags_but_not_token_ids():
    result = transcription()
    result.segments[2].flags.append("repetition")
    document = json.loads(render(result, "json"))
    assert document["text"] == result.text and document["duration"] == 3720.0
    assert [s["id"] for s in document["segments"]] == [0, 1, 2, 3, 4]
    assert document["segments"][2] == {"id": 2, "start": 22.0, "end": 22.6, "text": "Yes.", "text_tn": "",
                                       "flags": ["repetition"]}
    assert document["timings"] == {"decode": 1.2346}


def test_write_outputs_writes_every_format_in_utf8(tmp_path):
    paths = write_outputs(transcription(), tmp_path / "out", "sub/talk", FORMATS)
    assert [p.name for p in paths] == [f"talk.{f}" for f in FORMATS]
    assert (tmp_path / "out/sub/talk.srt").read_text(encoding="utf-8") == render(transcription(), "srt")


def test_unknown_format_is_one_clear_error():
    for call in (lambda: render(transcription(), "docx"), lambda: get_writer("docx"), lambda: formats_for("docx")):
        with pytest.raises(UsageError, match="unknown output format 'docx'"):
            call()


def test_all_names_every_format_and_a_format_itself():
    assert formats_for(ALL) == list(FORMATS) == ["txt", "json", "srt", "vtt", "tsv"]
    assert formats_for("vtt") == ["vtt"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_document_written_segment_by_segment_is_the_rendered_one(fmt):
    result = transcription()
    writer = get_writer(fmt, CueLimits(max_line_width=20))
    if writer.by_segment:
        written = writer.header + "".join(writer.segment(s) for s in result.segments)
        assert written == render(result, fmt, CueLimits(max_line_width=20))
    else:
        with pytest.raises(NotImplementedError):
            writer.segment(result.segments[0])


def test_the_readme_subtitle_example_is_what_the_writer_writes():
    """README.md shows the official demo clips' text (0.52-3.14 s and 3.90-7.41 s) as ``-f srt`` lays it out at
    the default limits; the example must be exactly that."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```\n(1\n00:00:00,520 --> .*?)```", readme, re.S)
    assert example is not None
    segments = [Segment(0.52, 3.14, "开饭时间早上九点至下午五点。"),
                Segment(3.90, 7.41, "The tribal chieftain called for the boy, and presented him with fifty "
                                    "pieces of gold.")]
    assert example.group(1) == render(Transcription("", segments, None, 7.41), "srt")
