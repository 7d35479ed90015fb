"""Write the trained demo model as an official hub directory (what ``load_model`` and funasr read).

model.pt                {"state_dict": ...}, every tensor bfloat16, lm_head stored beside the embedding
config.yaml             the hub config.yaml's structure with the demo sizes and a CTC head
configuration.json      ModelScope metadata naming the files
multilingual.tiktoken   the CTC vocabulary
Qwen3-0.6B/             config.json, tokenizer.json, tokenizer_config.json
README.md               the model card
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from oracle.hub import hub_config, qwen3_config

CARD = """# funasr-nano demo model (synthetic speech only)

A small Fun-ASR-Nano ({params:.1f} M parameters) in the official architecture and hub layout:
SenseVoice SAN-M encoder ({enc_blocks} + {tp_blocks} blocks, {enc_dim}-d), Transformer adaptor,
Qwen3 decoder ({llm_layers} layers, {llm_dim}-d, {vocab}-token byte-level BPE) and a trained CTC head
({ctc_vocab} ids). Trained by `training/` of funasr-nano for {steps} steps on {clips} sentences spoken
by espeak-ng voices (English, Mandarin, Japanese in kana), with the official prompt (language,
hotwords, ITN switch).

It has only ever heard synthetic voices: it is for trying the software offline, for tests and for
measuring the pipeline, **not for real speech**. Use Fun-ASR-Nano-2512 or Fun-ASR-MLT-Nano-2512 for
real recordings.
"""


def export(model, sizes, base: Path, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.bfloat16).cpu().contiguous() for k, v in model.official_state_dict().items()}
    torch.save({"state_dict": state}, out / "model.pt")
    enc, ada, llm, ctc = sizes.encoder, sizes.adaptor, sizes.llm, sizes.ctc_decoder
    dims = {
        "encoder": {
            "output_size": enc.output_size,
            "attention_heads": enc.attention_heads,
            "linear_units": enc.linear_units,
            "num_blocks": enc.num_blocks,
            "tp_blocks": enc.tp_blocks,
        },
        "adaptor": {"ffn_dim": ada.ffn_dim, "attention_heads": ada.attention_heads, "n_layer": ada.n_layer},
        "llm": {
            "hidden_size": llm.hidden_size,
            "intermediate_size": llm.intermediate_size,
            "num_hidden_layers": llm.num_layers,
            "num_attention_heads": llm.num_heads,
            "num_key_value_heads": llm.num_kv_heads,
            "head_dim": llm.head_dim,
            "max_window_layers": llm.num_layers,
        },
    }
    config = hub_config(dims)
    config["audio_adaptor_conf"]["attention_heads"] = ada.attention_heads
    config["ctc_decoder_conf"].update(ffn_dim=ctc.ffn_dim, n_layer=ctc.n_layer, attention_heads=ctc.attention_heads)
    config["ctc_vocab_size"] = sizes.ctc_vocab
    config["dataset_conf"]["ctc_tokenizer_conf"]["vocab_path"] = "multilingual.tiktoken"
    config["frontend_conf"].pop("dither")  # as on the hub: the official default (1.0) applies there
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    llm_dir = out / "Qwen3-0.6B"
    llm_dir.mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(base / "Qwen3-0.6B" / name, llm_dir / name)
    tokenizer = json.loads((llm_dir / "tokenizer.json").read_text())
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    qwen = qwen3_config(dims["llm"])
    qwen.update(vocab_size=llm.vocab_size, bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|im_end|>"])
    (llm_dir / "config.json").write_text(json.dumps(qwen, indent=2) + "\n")
    shutil.copyfile(base / "multilingual.tiktoken", out / "multilingual.tiktoken")
    (out / "configuration.json").write_text(
        json.dumps(
            {
                "framework": "pytorch",
                "task": "auto-speech-recognition",
                "model": {"type": "funasr"},
                "file_path_metas": {
                    "init_param": "model.pt",
                    "config": "config.yaml",
                    "tokenizer_conf": {"init_param_path": "Qwen3-0.6B"},
                    "llm_conf": {"init_param_path": "Qwen3-0.6B"},
                    "ctc_tokenizer_conf": {"vocab_path": "multilingual.tiktoken"},
                },
            },
            indent=2,
        )
        + "\n"
    )
    params = sum(v.numel() for k, v in state.items() if k != "llm.lm_head.weight") / 1e6
    (out / "README.md").write_text(
        CARD.format(
            params=params,
            enc_blocks=enc.num_blocks,
            tp_blocks=enc.tp_blocks,
            enc_dim=enc.output_size,
            llm_layers=llm.num_layers,
            llm_dim=llm.hidden_size,
            vocab=llm.vocab_size,
            ctc_vocab=sizes.ctc_vocab,
            steps=meta["steps"],
            clips=meta["clips"],
        )
    )


def main() -> None:
    """Export a weights snapshot (``python -m training.train --snapshot``) without the training machine:
    ``python -m training.export SNAPSHOT_DIR BASE_DIR OUT_DIR``."""
    import argparse

    from funasr_nano.text.ctc_tokenizer import CTCTokenizer
    from funasr_nano.text.prompt import PromptTokenizer
    from training.model import DemoModel, demo_sizes

    parser = argparse.ArgumentParser()
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=150_000)
    args = parser.parse_args()
    parts = [torch.load(p, map_location="cpu") for p in sorted(args.snapshot.glob("weights-*.pt"))]
    vocab = PromptTokenizer(args.base / "Qwen3-0.6B" / "tokenizer.json")._tokenizer.get_vocab_size()
    ctc_vocab = CTCTokenizer(args.base / "multilingual.tiktoken").vocab_size
    sizes = demo_sizes(llm_vocab=-(-vocab // 64) * 64, ctc_vocab=ctc_vocab)
    model = DemoModel(sizes)
    meta = {"steps": int(parts[0]["step"]), "seconds": round(float(parts[0]["trained"])), "clips": args.clips}
    model.load_state_dict({k: v.float() for part in parts for k, v in part.items() if k not in ("step", "trained")})
    export(model, sizes, args.base, args.out, meta)
    print(f"exported step {meta['steps']} to {args.out}")


if __name__ == "__main__":
    main()
