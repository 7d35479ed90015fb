"""MLX backend at full precision: parity with the official funasr reference and with the torch backend
(tiny random checkpoint, float32, CPU via mlx[cpu]) for the encoder and adaptor, batched encoding,
prompt embeddings and last logits, greedy ids alone and batched, step-by-step tokens, stop tokens, a
worker thread, and the Python API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

# ImportError, not just ModuleNotFoundError: on Linux plain `mlx` (no [cpu]) installs but fails to import.
mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

from engines import decode  # noqa: E402
from mlx_helpers import RELATIVE_TOLERANCE, mlx_logits, prompt_ids, relative_error, torch_last_logits  # noqa: E402

from funasr_nano.backends import Request  # noqa: E402
from funasr_nano.backends.mlx.encoder import padding_masks  # noqa: E402


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
