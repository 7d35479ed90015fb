"""MLX converted copies and quantization: a full-precision copy is lossless and loads with ``auto``, a
quantized model computes exactly its dequantized weights, its agreement with full precision, and the
quantized encoder option.

The agreement tests print their figures (teacher-forced top-1, free-running greedy, max logit error)
straight to the terminal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# ImportError, not just ModuleNotFoundError: on Linux plain `mlx` (no [cpu]) installs but fails to import.
mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

from engines import decode  # noqa: E402
from mlx_helpers import (  # noqa: E402
    RELATIVE_TOLERANCE,
    mlx_logits,
    prompt_ids,
    relative_error,
    teacher_forced_logits,
    torch_last_logits,
)

import funasr_nano  # noqa: E402
from funasr_nano.backends.mlx.convert import read_converted  # noqa: E402
from funasr_nano.backends.torch import TorchBackend  # noqa: E402
from funasr_nano.checkpoint import MLX_WEIGHTS, load_state_dict  # noqa: E402
from funasr_nano.config import read_config  # noqa: E402


def test_converted_copy_is_lossless_and_loads_with_auto(official_tiny, converted, clips, prompts):
    out = converted / "bf16"
    assert sorted(p.name for p in out.iterdir()) == ["Qwen3-0.6B", "config.yaml", MLX_WEIGHTS]
    assert (out / "Qwen3-0.6B" / "tokenizer.json").is_file()
    arrays, quantization = read_converted(out / MLX_WEIGHTS)
    assert quantization is None
    source = load_state_dict(official_tiny.model_dir)
    for name, tensor in source.items():
        if name == "llm.lm_head.weight":  # tied: stored once, as the embedding
            continue
        array = np.array(arrays[name].astype(mx.float32))
        if name.endswith("fsmn_block.weight"):
            array = array.transpose(0, 2, 1)
        assert np.array_equal(array, tensor.float().numpy()), name
    assert read_config(out).variant == read_config(official_tiny.model_dir).variant
    model = funasr_nano.load_model(out, device="cpu", dtype="float32")  # auto: MLX weights only -> MLX
    assert model.backend.name == "mlx"
    waveforms = [clips[p["clip"]]["wav"].numpy() for p in prompts]
    got = decode(model.backend, waveforms, [prompt_ids(model, p) for p in prompts], [20] * len(prompts))
    assert got == [p["gen_ids"].tolist() for p in prompts]


def _torch_backend_with_dequantized_weights(official_tiny, quantized_model) -> TorchBackend:
    """The torch backend running exactly the weights the quantized MLX model represents."""
    tensors = dict(load_state_dict(official_tiny.model_dir))
    model = quantized_model.backend.model
    for path in quantized_model.backend.quantization.modules:
        module = model
        for part in path.split("."):
            module = module[int(part)] if isinstance(module, list) else getattr(module, part)
        weight = mx.dequantize(module.weight, module.scales, module.biases, module.group_size, module.bits)
        tensors[f"{path}.weight"] = torch.from_numpy(np.array(weight.astype(mx.float32)))
        if path == "llm.model.embed_tokens":  # the tied head is loaded from lm_head
            tensors["llm.lm_head.weight"] = tensors[f"{path}.weight"]
    config = read_config(official_tiny.model_dir)
    return TorchBackend(config, tensors, sorted(quantized_model.backend.stop_ids), "cpu", "float32", 8, "dequantized")


@pytest.mark.parametrize("variant", ["q8", "q4"])
def test_quantized_model_computes_its_dequantized_weights(official_tiny, converted, clips, prompts, variant):
    model = funasr_nano.load_model(converted / variant, backend="mlx", device="cpu", dtype="float32")
    quantization = model.backend.quantization
    assert quantization is not None and quantization.group_size == 64
    assert "llm.model.embed_tokens" in quantization.modules
    assert not any(m.startswith("audio_") for m in quantization.modules)
    reference = _torch_backend_with_dequantized_weights(official_tiny, model)
    waveforms = [clips[p["clip"]]["wav"].numpy() for p in prompts]
    ids = [prompt_ids(model, p) for p in prompts]
    for prompt, audio in zip(ids, model.backend.encode_waveforms(waveforms), strict=True):
        embeddings = model.backend.model.prompt_embeddings(prompt, audio)
        ours = mlx_logits(model, embeddings, 1)[0]
        theirs = torch_last_logits(reference.model.llm, torch.from_numpy(np.array(embeddings)))
        assert relative_error(ours, theirs) < RELATIVE_TOLERANCE


@pytest.fixture(scope="module")
def full_precision_logits(mlx_model, clips, prompts) -> list[np.ndarray]:
    logits = []
    for prompt in prompts:
        wav = clips[prompt["clip"]]["wav"].numpy()
        logits.append(teacher_forced_logits(mlx_model, prompt, wav, prompt["gen_ids"].tolist()))
    return logits


@pytest.mark.parametrize("variant", ["q8", "q4"])
def test_quantization_agreement_with_full_precision(
    full_precision_logits, converted, clips, prompts, variant, capsys
):
    model = funasr_nano.load_model(converted / variant, backend="mlx", device="cpu", dtype="float32")
    agree = total = positional = 0
    max_error = max_relative = 0.0
    for prompt, full in zip(prompts, full_precision_logits, strict=True):
        expected = prompt["gen_ids"].tolist()
        quantized = teacher_forced_logits(model, prompt, clips[prompt["clip"]]["wav"].numpy(), expected)
        agree += int((full.argmax(-1) == quantized.argmax(-1)).sum())
        total += len(expected)
        max_error = max(max_error, float(np.abs(full - quantized).max()))
        max_relative = max(max_relative, float(np.abs(full - quantized).max() / np.abs(full).max()))
    waveforms = [clips[p["clip"]]["wav"].numpy() for p in prompts]
    free = decode(model.backend, waveforms, [prompt_ids(model, p) for p in prompts], [20] * len(prompts))
    for tokens, prompt in zip(free, prompts, strict=True):
        positional += sum(a == b for a, b in zip(tokens, prompt["gen_ids"].tolist(), strict=False))
    with capsys.disabled():
        print(
            f"\n[{variant}] vs float32, tiny random checkpoint, {total} positions: teacher-forced top-1 "
            f"{agree / total:.1%}, free-running greedy {positional / total:.1%}, max |logit error| "
            f"{max_error:.4f} ({max_relative:.1%} of max |logit|)"
        )
    # Random tiny weights give near-uniform logits (median top-1 margin ~0.14): see the README for
    # what these numbers do and do not say about the real model.
    if variant == "q8":
        assert agree / total >= 0.85 and max_relative < 0.15
    else:
        assert agree / total >= 0.25 and max_relative < 1.0


def test_quantized_encoder_option(converted, clips, capsys):
    model = funasr_nano.load_model(converted / "q8-audio", backend="mlx", device="cpu", dtype="float32")
    modules = model.backend.quantization.modules
    assert any(m.startswith("audio_encoder.") for m in modules)
    assert any(m.startswith("audio_adaptor.") for m in modules)
    # The 560-wide first layer does not divide into groups of 64 and stays in full precision.
    assert "audio_encoder.encoders0.0.self_attn.linear_q_k_v" not in modules
    features = [c["fbank_lfr"].numpy() for c in clips.values()]
    error = max(
        relative_error(audio, clip["adaptor_out"][: clip["fake_token_len"]])
        for audio, clip in zip(model.backend.model.encode(features), clips.values(), strict=True)
    )
    with capsys.disabled():
        print(f"\n[q8-audio] audio embeddings vs float32: max relative error {error:.2%}")
    assert error < 0.1
