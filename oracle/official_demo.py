"""Transcribe audio files with the OFFICIAL funasr FunASRNano loading a model directory unchanged.

    python -m oracle.official_demo MODEL_DIR OUT.json FILE... [--language 中文] [--no-itn] [--ctc]

The directory's own config.yaml and model.pt are used; only the paths the hub resolves through
configuration.json (``Qwen3-0.6B``, ``multilingual.tiktoken``) are made absolute, and dither is 0
(deterministic fbank). Without ``--ctc`` the CTC branch is left out: its timestamps need
``torchaudio.functional.forced_align``, which machines without torchaudio lack. Writes
``{"texts": [...], "ctc_texts": [...], "timestamps": [...], "ctc_timestamps": [...], "versions": {...}}``
(the last three None without ``--ctc``).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import yaml

from oracle.hub import official_kwargs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--language")
    parser.add_argument("--no-itn", action="store_true")
    parser.add_argument("--ctc", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    import funasr
    import torch
    from funasr import AutoModel

    model_dir = args.model_dir.resolve()
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    kwargs = official_kwargs(config, model_dir, 0, model_dir / "model.pt")
    kwargs.pop("ctc_vocab_size", None)
    if args.ctc:
        for key in (
            "ctc_decoder",
            "ctc_decoder_conf",
            "ctc_conf",
            "ctc_weight",
            "detach_ctc_decoder",
            "ctc_vocab_size",
        ):
            kwargs[key] = config[key]
        kwargs["dataset_conf"] = dict(config["dataset_conf"])
        kwargs["dataset_conf"]["ctc_tokenizer_conf"] = {
            **config["dataset_conf"]["ctc_tokenizer_conf"],
            "vocab_path": str(model_dir / "multilingual.tiktoken"),
        }
    model = AutoModel(**kwargs)
    texts, ctc_texts, timestamps, ctc_timestamps = [], [], [], []
    for path in args.files:
        (result,) = model.generate(
            input=[path], cache={}, batch_size=1, language=args.language, itn=not args.no_itn, max_length=512
        )
        texts.append(result["text"])
        ctc_texts.append(result.get("ctc_text"))
        timestamps.append(result.get("timestamps"))
        ctc_timestamps.append(result.get("ctc_timestamps"))
    args.out.write_text(
        json.dumps(
            {
                "texts": texts,
                "ctc_texts": ctc_texts,
                "timestamps": timestamps,
                "ctc_timestamps": ctc_timestamps,
                "versions": {"funasr": funasr.__version__, "torch": torch.__version__},
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
