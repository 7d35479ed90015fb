"""Full-size parity on record: the official funasr vs funasr-nano on a full-size random checkpoint.

Builds the 1261-tensor bf16 checkpoint in the hub layout with the official code
(``python -m oracle.build_official --full``, ~80 s and ~9 GB RAM on CPU), then runs our loader and model
(fp32) on the same clips and prints every stage's comparison. Optionally writes the figures as JSON.

    python -m benchmarks.full_size_parity --work /tmp/official_full [--reuse] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, command_line


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def build_official(work: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "oracle.build_official", str(work.resolve()), "--full"], cwd=ROOT, check=True
    )
    return time.perf_counter() - started


def compare(work: Path, device: str) -> dict:
    import funasr_nano
    from funasr_nano.backends.torch.qwen3 import prompt_logits
    from funasr_nano.frontend.features import extract_features

    reference = torch.load(work / "reference.pt", weights_only=True)
    started = time.perf_counter()
    model = funasr_nano.load_model(work, device=device, dtype="float32")
    load_s = time.perf_counter() - started
    torch_model = model.backend.model
    n_params = sum(p.numel() for p in torch_model.parameters())
    figures: dict = {"load_seconds": round(load_s, 2), "parameters": n_params, "clips": [], "prompts": []}
    clips = {c["name"]: c for c in reference["clips"]}
    for clip in reference["clips"]:
        features = extract_features([clip["wav"]])[0]
        official_features = clip["fbank_lfr"].to(device)
        with torch.inference_mode():
            encoded = torch_model.audio_encoder(
                official_features[None].clone(), torch.tensor([len(features)], device=device)
            )
            adapted = torch_model.audio_adaptor(encoded, None)[0]
        row = {
            "clip": clip["name"],
            "seconds": clip["wav"].numel() / 16000,
            "lfr_frames": clip["fbank_lfr_len"],
            "audio_tokens_official": clip["fake_token_len"],
            "audio_tokens_ours": torch_model.encode([official_features])[0].shape[0],
            "fbank_max_abs_diff": float((features - clip["fbank_lfr"]).abs().max()),
            "encoder_rel_err": relative_error(encoded[0].cpu(), clip["encoder_out"]),
            "adaptor_rel_err": relative_error(adapted.cpu(), clip["adaptor_out"]),
        }
        figures["clips"].append(row)
        print(json.dumps(row))
    for prompt in reference["prompts"]:
        ids = model.tokenizer.prompt_ids(prompt["hotwords"], prompt["language"], prompt["itn"])
        source = ids.prefix + [0] * prompt["fake_token_len"] + ids.suffix
        clip = clips[prompt["clip"]]
        audio = torch_model.encode([clip["fbank_lfr"].to(device)])[0]
        embeddings = torch_model.prompt_embeddings(ids, audio)
        length = embeddings.shape[0]
        logits = prompt_logits(torch_model.llm, prompt["inputs_embeds"].to(device)).cpu()
        expected = prompt["gen_ids"].tolist()
        result = model.transcribe(
            clip["wav"].numpy(),
            hotwords=prompt["hotwords"],
            language=prompt["language"],
            itn=prompt["itn"],
            max_new_tokens=len(expected),
            vad=False,
        )
        row = {
            "clip": prompt["clip"],
            "prompt_ids_equal": source == prompt["source_ids"].tolist(),
            "prompt_length": length,
            "embeddings_rel_err": relative_error(embeddings.cpu(), prompt["inputs_embeds"]),
            "logits_rel_err": relative_error(logits, prompt["logits_last"]),
            "greedy_ids_official": expected,
            "greedy_ids_ours": result.segments[0].tokens,
            "greedy_identical": result.segments[0].tokens == expected,
        }
        figures["prompts"].append(row)
        print(json.dumps(row))
    figures["peak_rss_gb_ours"] = round(peak_rss_gb(), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/official_full"))
    parser.add_argument("--reuse", action="store_true", help="reuse an existing build in --work")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    build_s = None
    if not (args.reuse and (args.work / "reference.pt").is_file()):
        build_s = round(build_official(args.work), 1)
    state = torch.load(args.work / "model.pt", weights_only=True, mmap=True)["state_dict"]
    checkpoint = {
        "tensors": len(state),
        "bytes": (args.work / "model.pt").stat().st_size,
        "dtypes": sorted({str(v.dtype) for v in state.values()}),
    }
    del state
    figures = compare(args.work, args.device)
    record = {
        "what": "full-size parity, official funasr 1.4.16 vs funasr-nano (fp32)",
        "command": command_line(),
        "date": datetime.date.today().isoformat(),
        "device": args.device
        if args.device != "cpu"
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "checkpoint": checkpoint,
        "official_build_seconds": build_s,
        **figures,
    }
    print(json.dumps({k: v for k, v in record.items() if k not in ("clips", "prompts")}))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
