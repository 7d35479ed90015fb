"""Transcribe a file (or the bundled sample) and print the text and segment times.

    python examples/transcribe.py [AUDIO] [--model demo|nano|mlt|DIR] [--language en]

Without AUDIO it transcribes the demo model's English sample, offline.
"""

from __future__ import annotations

import argparse

import funasr_nano
from funasr_nano import demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("audio", nargs="?", default=str(demo.sample("en")))
    parser.add_argument("--model", default="demo", help="demo (bundled), nano, mlt, a hub id or a directory")
    parser.add_argument("--language", default=None, help="e.g. en, zh, ja (default: automatic)")
    args = parser.parse_args()

    model = funasr_nano.load_model(args.model)
    result = model.transcribe(args.audio, language=args.language)
    print(result.text)
    for segment in result.segments:
        print(f"  {segment.start:6.2f} - {segment.end:6.2f}  {segment.text}")


if __name__ == "__main__":
    main()
