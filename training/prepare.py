"""Tokenizers for the demo model, from the corpus (run on the CPU before training).

    python -m training.prepare CORPUS.jsonl BASE_DIR [--llm-vocab 4000] [--ctc-vocab 3000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from funasr_nano.text.prompt import ASSISTANT_SUFFIX, prompt_prefix
from training.data import LANGUAGE_NAMES, load_corpus
from training.tokenizers_build import build_ctc_vocabulary, build_llm_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("--llm-vocab", type=int, default=4000)
    parser.add_argument("--ctc-vocab", type=int, default=3000)
    args = parser.parse_args()
    train = [item for item in load_corpus(args.corpus) if item["split"] == "train"]
    texts = [item["itn"] for item in train] + [item["spoken"] for item in train if item["spoken"] != item["itn"]]
    # The prompt's fixed strings, often enough that BPE gives them short encodings.
    prompts = [
        prompt_prefix(h, lang, itn) + ASSISTANT_SUFFIX
        for h in (None, ["热词"])
        for itn in (True, False)
        for lang in (None, *LANGUAGE_NAMES.values())
    ]
    build_llm_tokenizer(texts + prompts * 2000, args.llm_vocab, args.base / "Qwen3-0.6B")
    ranks = build_ctc_vocabulary([item["itn"] for item in train], args.ctc_vocab, args.base / "multilingual.tiktoken")
    print(f"tokenizers -> {args.base} (CTC ranks {ranks})")


if __name__ == "__main__":
    main()
