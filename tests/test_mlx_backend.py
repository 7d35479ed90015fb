"""MLX backend: parity with the official funasr reference and with the torch backend (tiny random checkpoint,
float32, CPU via mlx[cpu]), the converted/quantized copies, backend selection and the CLI.

The quantization tests print their agreement with full precision (teacher-forced top-1, free-running
greedy, max logit error) straight to the terminal.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

# ImportError, not just ModuleNotFoundError: on Linux plain `mlx` (no [cpu]) installs but fails to import.
mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

from engines import decode  # noqa: E402

import funasr_nano  # noqa: E402
from funasr_nano.backends import Request, selection  # noqa: E402
from funasr_nano.backends.mlx.convert import convert, read_converted  # noqa: E402
from funasr_nano.backends.mlx.encoder import padding_masks  # noqa: E402
from funasr_nano.backends.mlx.qwen3 import KVCache  # noqa: E402
from funasr_nano.backends.torch import TorchBackend  # noqa: E402
from funasr_nano.backends.torch import qwen3 as torch_qwen3  # noqa: E402
from funasr_nano.checkpoint import MLX_WEIGHTS, load_state_dict  # noqa: E402
from funasr_nano.cli import main as cli  # noqa: E402
from funasr_nano.config import read_config  # noqa: E402
from funasr_nano.errors import ModelLoadError, UsageError  # noqa: E402

RELATIVE_TOLERANCE = 1e-4


Array = np.ndarray | mx.array | torch.Tensor


def relative_error(ours: Array, theirs: Array) -> float:
    a, b = (np.asarray(t.float() if isinstance(t, torch.Tensor) else t, np.float64) for t in (ours, theirs))
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def mlx_model(official_tiny):
    model = funasr_nano.load_model(official_tiny.model_dir, backend="mlx", device="cpu", dtype="float32")
    assert model.backend.name == "mlx" and model.backend.device == "cpu"
    return model


@pytest.fixture(scope="module")
def torch_model(official_tiny):
    return funasr_nano.load_model(official_tiny.model_dir, backend="torch", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clips(official_tiny):
    return {c["name"]: c for c in official_tiny.reference["clips"]}


@pytest.fixture(scope="module")
def prompts(official_tiny):
    return official_tiny.reference["prompts"]


@pytest.fixture(scope="module")
def converted(official_tiny, tmp_path_factory):
    """MLX copies of the tiny checkpoint: full precision, 8-bit, 4-bit, 8-bit with the encoder too."""
    root = tmp_path_factory.mktemp("mlx-converted")
    variants = {"bf16": (None, False), "q8": (8, False), "q4": (4, False), "q8-audio": (8, True)}
    for name, (bits, audio) in variants.items():
        convert(official_tiny.model_dir, root / name, bits, quantize_audio=audio)
    return root


def prompt_ids(model, prompt):
    return model.tokenizer.prompt_ids(prompt["hotwords"], prompt["language"], prompt["itn"])


def mlx_logits(model, embeddings: mx.array, last: int) -> np.ndarray:
    """Logits [last, V] of the final ``last`` positions of one sequence (prefill from position 0)."""
    llm = model.backend.model.llm
    cache = KVCache(llm.config, 1, embeddings.shape[0], embeddings.dtype)
    hidden = llm(embeddings[None], cache, mx.array([0]), "causal")
    return np.array(llm.logits(hidden[0, -last:]))


def torch_last_logits(llm: torch_qwen3.Qwen3ForCausalLM, embeddings: torch.Tensor) -> torch.Tensor:
    length = embeddings.shape[0]
    cache = torch_qwen3.KVCache.allocate(llm.config, 1, length, torch.device("cpu"), torch.float32)
    positions = torch.arange(length)[None]
    group = llm.config.num_heads // llm.config.num_kv_heads
    mask = torch_qwen3.attention_mask(positions, torch.tensor([length]), length, group)
    with torch.inference_mode():
        return llm.logits(llm(embeddings[None], cache, torch.tensor([0]), positions, mask, length)[0, -1])


def teacher_forced_logits(model, prompt, wav: np.ndarray, ids: list[int]) -> np.ndarray:
    """Logits predicting each of ``ids`` given the prompt and the ids before it."""
    backend = model.backend
    audio = backend.encode_waveforms([wav])[0]
    embeddings = backend.model.prompt_embeddings(prompt_ids(model, prompt), audio)
    embeddings = mx.concatenate([embeddings, backend.model.llm.embed(mx.array(ids[:-1]))])
    return mlx_logits(model, embeddings, len(ids))


# --- full precision: official reference and torch backend ----------------------------------------------


def test_encoder_and_adaptor_match_official_and_torch(mlx_model, torch_model, clips):
    ours, theirs = mlx_model.backend.model, torch_model.backend.model
    worst = 0.0
    for clip in clips.values():
        features = clip["fbank_lfr"]
        frames = features.shape[0]
        frame_mask, key_mask = padding_masks([frames], frames, mx.float32)
        encoded = ours.audio_encoder(mx.array(features.numpy())[None], frame_mask, key_mask)
        adapted = ours.audio_adaptor(encoded, key_mask)
        with torch.inference_mode():
            torch_encoded = theirs.audio_encoder(features[None].clone(), torch.tensor([frames]))
            torch_adapted = theirs.audio_adaptor(torch_encoded, None)
        errors = [
            relative_error(encoded[0], clip["encoder_out"]),
            relative_error(adapted[0], clip["adaptor_out"]),
            relative_error(encoded[0], torch_encoded[0]),
            relative_error(adapted[0], torch_adapted[0]),
        ]
        assert max(errors) < RELATIVE_TOLERANCE, (clip["name"], errors)
        worst = max(worst, *errors)
    print(f"MLX encoder/adaptor vs official and torch: max relative error {worst:.2e}")


def test_batched_encoding_with_padding_matches_single_clips(mlx_model, clips):
    model = mlx_model.backend.model
    features = [c["fbank_lfr"].numpy() for c in clips.values()]
    together = model.encode(features)
    for feature, batched, clip in zip(features, together, clips.values(), strict=True):
        alone = model.encode([feature])[0]
        assert batched.shape[0] == clip["fake_token_len"]
        assert relative_error(batched, alone) < RELATIVE_TOLERANCE, clip["name"]
        assert relative_error(alone, clip["adaptor_out"][: clip["fake_token_len"]]) < RELATIVE_TOLERANCE


def test_waveform_encoding_matches_torch_backend(mlx_model, torch_model, clips):
    waveforms = [c["wav"].numpy() for c in clips.values()]
    ours = mlx_model.backend.encode_waveforms(waveforms)
    theirs = torch_model.backend.model.encode_waveforms([torch.from_numpy(w) for w in waveforms])
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == tuple(b.shape)
        assert relative_error(a, b) < RELATIVE_TOLERANCE


def test_prompt_embeddings_and_last_logits_match_official_and_torch(mlx_model, torch_model, clips, prompts):
    model = mlx_model.backend.model
    worst = 0.0
    for prompt in prompts:
        audio = model.encode([clips[prompt["clip"]]["fbank_lfr"].numpy()])[0]
        embeddings = model.prompt_embeddings(prompt_ids(mlx_model, prompt), audio)
        assert relative_error(embeddings, prompt["inputs_embeds"]) < RELATIVE_TOLERANCE
        reference_embeddings = prompt["inputs_embeds"]
        logits = mlx_logits(mlx_model, mx.array(reference_embeddings.numpy()), 1)[0]
        errors = [
            relative_error(logits, prompt["logits_last"]),
            relative_error(logits, torch_last_logits(torch_model.backend.model.llm, reference_embeddings)),
        ]
        assert max(errors) < RELATIVE_TOLERANCE, errors
        worst = max(worst, *errors)
    print(f"MLX last logits vs official and torch: max relative error {worst:.2e}")


def test_greedy_ids_match_official_and_torch_single_and_batched(mlx_model, torch_model, clips, prompts):
    waveforms = [clips[p["clip"]]["wav"].numpy() for p in prompts]
    ids = [prompt_ids(mlx_model, p) for p in prompts]
    expected = [p["gen_ids"].tolist() for p in prompts]
    budgets = [len(e) for e in expected]
    backend = mlx_model.backend
    one_by_one = [decode(backend, [w], [i], [n])[0] for w, i, n in zip(waveforms, ids, budgets, strict=True)]
    assert one_by_one == expected
    # One left-padded batch: prompts and audio of different lengths, uneven budgets.
    uneven = [n if i % 2 else n // (i + 2) for i, n in enumerate(budgets)]
    assert decode(backend, waveforms, ids, uneven) == [e[:n] for e, n in zip(expected, uneven, strict=True)]
    assert decode(torch_model.backend, waveforms, ids, budgets) == expected


def test_tokens_come_back_one_step_at_a_time(mlx_model, clips, prompts):
    waveforms = [clips[p["clip"]]["wav"].numpy() for p in prompts]
    ids = [prompt_ids(mlx_model, p) for p in prompts]
    budgets = [len(p["gen_ids"]) - i % 3 for i, p in enumerate(prompts)]
    backend = mlx_model.backend
    backend.batch_size, original = 3, backend.batch_size  # several static batches: keys must map back
    handed: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    sizes = []
    try:
        for index, (w, p, n) in enumerate(zip(waveforms, ids, budgets, strict=True)):
            backend.add(index, Request(w, p, n))
        while not backend.idle:
            for event in backend.step():
                handed[event.key].extend(event.tokens)
                sizes.append(len(event.tokens))
    finally:
        backend.batch_size = original
    assert [handed[i] for i in range(len(prompts))] == [
        p["gen_ids"].tolist()[:n] for p, n in zip(prompts, budgets, strict=True)]
    assert set(sizes) <= {0, 1}


def test_stop_token_ends_a_sequence(mlx_model, clips, prompts):
    prompt = prompts[0]
    expected = prompt["gen_ids"].tolist()
    backend = mlx_model.backend
    stop = expected[3]
    original = backend.stop_ids
    backend.stop_ids = frozenset({stop})
    try:
        wav = clips[prompt["clip"]]["wav"].numpy()
        tokens = decode(backend, [wav], [prompt_ids(mlx_model, prompt)], [20])[0]
    finally:
        backend.stop_ids = original
    assert tokens == expected[: expected.index(stop)]


def test_generate_from_a_worker_thread(mlx_model, clips, prompts):
    # The server decodes on its batching thread, and MLX binds lazy arrays to the thread that made them.
    prompt = prompts[0]
    arguments = ([clips[prompt["clip"]]["wav"].numpy()], [prompt_ids(mlx_model, prompt)], [20])
    with ThreadPoolExecutor(1) as pool:
        tokens = pool.submit(decode, mlx_model.backend, *arguments).result()
    assert tokens == [prompt["gen_ids"].tolist()]


def test_python_api_transcribes_like_the_official_model(mlx_model, clips, prompts):
    for prompt in prompts[:3]:
        result = mlx_model.transcribe(
            clips[prompt["clip"]]["wav"].numpy(), hotwords=prompt["hotwords"], language=prompt["language"],
            itn=prompt["itn"], max_new_tokens=len(prompt["gen_ids"]), vad=False,
        )
        (segment,) = result.segments
        assert segment.tokens == prompt["gen_ids"].tolist()
        assert segment.text == prompt["text"] and segment.text_tn == prompt["text_tn"]


# --- converted copies and quantization ---------------------------------------------------------------


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


# --- backend selection, errors, CLI ----------------------------------------------------------------------


def test_mlx_backend_imports_no_torch_backend_code():
    # A fresh interpreter: this one has the torch backend loaded by the fixtures.
    code = (
        "import sys; import funasr_nano.backends.mlx.backend, funasr_nano.backends.mlx.convert; "
        "print(sorted(m for m in sys.modules if m.startswith('funasr_nano.backends.torch')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_backend_selection(official_tiny, converted, monkeypatch):
    original, mlx_only = official_tiny.model_dir, converted / "bf16"
    with pytest.raises(UsageError, match="unknown backend"):
        selection.choose_backend("metal", original)
    monkeypatch.setattr(selection, "is_apple_silicon", lambda: False)
    assert selection.choose_backend("auto", original) == "torch"
    assert selection.choose_backend("auto", mlx_only) == "mlx"
    assert selection.choose_backend("mlx", original) == "mlx"
    with pytest.raises(UsageError, match="MLX weights only"):
        selection.choose_backend("torch", mlx_only)
    monkeypatch.setattr(selection, "is_apple_silicon", lambda: True)
    assert selection.choose_backend("auto", original) == "mlx"
    monkeypatch.setattr(selection, "mlx_import_error", lambda: "No module named 'mlx'")
    assert selection.choose_backend("auto", original) == "torch"
    with pytest.raises(UsageError, match=r"pip install 'funasr-nano\[mlx\]'"):
        selection.choose_backend("mlx", original)


def test_clear_errors(official_tiny, converted, tmp_path):
    with pytest.raises(UsageError, match="not an empty directory"):
        convert(official_tiny.model_dir, converted / "q8", 8)
    with pytest.raises(ModelLoadError, match="has no model.pt"):
        convert(converted / "q8", tmp_path / "again", 4)
    with pytest.raises(UsageError, match="bits must be 4 or 8"):
        convert(official_tiny.model_dir, tmp_path / "q3", 3)
    with pytest.raises(UsageError, match="unknown device"):
        funasr_nano.load_model(official_tiny.model_dir, backend="mlx", device="cuda")
    with pytest.raises(UsageError, match="convert --bits 8"):
        funasr_nano.load_model(official_tiny.model_dir, backend="mlx", int8=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    mx.save_safetensors(str(foreign / MLX_WEIGHTS), {"x": mx.zeros(2)})
    with pytest.raises(ModelLoadError, match="not written by"):
        read_converted(foreign / MLX_WEIGHTS)


def test_cli_convert_and_transcribe_match_torch(official_tiny, tmp_path, capsys):
    # The first two spoken phrases (VAD finds two segments): enough for the whole path, quick on CPU.
    samples, rate = soundfile.read(Path(__file__).parent / "data" / "speech.ogg", dtype="float32")
    speech = str(tmp_path / "speech.wav")
    soundfile.write(speech, samples[: 8 * rate], rate)
    common = ["--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4"]
    model_dir = str(official_tiny.model_dir)
    assert cli.main(["transcribe", speech, "--model", model_dir, "--backend", "torch", *common]) == 0
    torch_text = capsys.readouterr().out
    assert cli.main(["transcribe", speech, "--model", model_dir, "--backend", "mlx", *common]) == 0
    assert capsys.readouterr().out == torch_text and torch_text.strip()
    out = tmp_path / "mlx-8bit"
    assert cli.main(["convert", "--backend", "mlx", "--bits", "8", "--model", model_dir, str(out)]) == 0
    assert "8-bit, group 64" in capsys.readouterr().out
    assert cli.main(["transcribe", speech, "--model", str(out), *common]) == 0
    assert capsys.readouterr().out.strip()
    assert cli.main(["transcribe", speech, "--model", str(out), "--backend", "torch"]) == 2
    assert "MLX weights only" in capsys.readouterr().err
