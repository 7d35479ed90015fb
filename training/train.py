"""Train the demo Fun-ASR-Nano on the synthetic pool (GPU), resumable, then export the hub directory.

    python -m training.train --corpus C.jsonl --base BASE_DIR --pool POOL_DIR --work WORK_DIR \
        --seconds 900 --time-limit 520 [--export OUT_DIR]

BASE_DIR holds the tokenizers (``Qwen3-0.6B/tokenizer.json``, ``multilingual.tiktoken``) made by
``python -m training.prepare``. WORK_DIR/state.pt is the resumable training state (weights, optimiser, step, RNG);
a run stops once ``--seconds`` of training are done in all, or after ``--time-limit`` seconds, and a
later run continues from it (the learning-rate schedule follows the training time).
Loss: next-token cross-entropy on the transcript (after the official prompt and ceil(T/8) audio
tokens) plus CTC on the CTC head (weight 1, as the official config's ``ctc_weight``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from funasr_nano.text.ctc_tokenizer import CTCTokenizer
from funasr_nano.text.prompt import IM_END, PromptTokenizer
from training.data import BatchMaker, ClipPool, load_corpus
from training.model import DemoModel, demo_sizes


def splice(model: DemoModel, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    encoded, key_mask = model.encode(batch.features, batch.lengths)
    adapted = model.audio_adaptor(encoded, key_mask)
    embeddings = model.llm.embed(batch.input_ids)
    rows = torch.arange(embeddings.shape[0], device=embeddings.device)
    width = int(batch.audio_tokens.max())
    offsets = torch.arange(width, device=embeddings.device)
    valid = offsets[None, :] < batch.audio_tokens[:, None]
    target_rows = rows[:, None].expand(-1, width)[valid]
    target_cols = (batch.audio_start[:, None] + offsets[None, :])[valid]
    embeddings = embeddings.index_put((target_rows, target_cols), adapted[:, :width][valid].to(embeddings.dtype))
    return embeddings, encoded, key_mask


def losses(model: DemoModel, batch, blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    embeddings, encoded, key_mask = splice(model, batch)
    hidden = model.llm_hidden(embeddings)
    picked = batch.labels != -100
    logits = model.llm.lm_head(hidden[picked]).float()
    ce = F.cross_entropy(logits, batch.labels[picked])
    log_probs = model.ctc_log_probs(encoded, key_mask)
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.ctc_targets,
        batch.lengths,
        batch.ctc_lengths,
        blank=blank,
        reduction="mean",
        zero_infinity=True,
    )
    return ce, ctc


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up over steps, then a cosine to 5 % over the fraction of the training time spent."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=900.0, help="training time in all, across calls")
    parser.add_argument("--batch", type=int, default=192)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--time-limit", type=float, default=520.0, help="seconds for this call")
    parser.add_argument("--min-clips", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2512)
    parser.add_argument("--export", type=Path)
    parser.add_argument("--snapshot", type=Path, help="also write the weights here (bf16, three files)")
    parser.add_argument("--init", type=Path, help="start from an exported hub directory's weights (a new schedule)")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(args.seed)
    corpus = load_corpus(args.corpus)
    tokenizer = PromptTokenizer(args.base / "Qwen3-0.6B" / "tokenizer.json")
    eos_id = tokenizer._tokenizer.token_to_id(IM_END)
    ctc = CTCTokenizer(args.base / "multilingual.tiktoken")
    vocab = tokenizer._tokenizer.get_vocab_size()
    sizes = demo_sizes(llm_vocab=-(-vocab // 64) * 64, ctc_vocab=ctc.vocab_size)
    blank = sizes.ctc_vocab - 1
    model = DemoModel(sizes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    args.work.mkdir(parents=True, exist_ok=True)
    state_path = args.work / "state.pt"
    step, trained = 0, 0.0
    maker = BatchMaker(corpus, tokenizer, ctc.encode, eos_id, args.seed)
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained = state["step"], state["trained"]
        maker.rng = random.Random(f"{args.seed}-{step}")
        print(f"resumed at step {step}", flush=True)
    elif args.snapshot and (args.snapshot / "weights-0.pt").exists():
        # A fresh machine: continue from the carried snapshot (weights only, a new optimiser).
        parts = [torch.load(p, map_location=device) for p in sorted(args.snapshot.glob("weights-*.pt"))]
        model.load_state_dict({k: v.float() for part in parts for k, v in part.items() if k not in ("step", "trained")})
        step, trained = int(parts[0]["step"]), float(parts[0]["trained"])
        maker.rng = random.Random(f"{args.seed}-{step}")
        print(f"continued from the snapshot at step {step}", flush=True)
    elif args.init:
        state = torch.load(args.init / "model.pt", map_location=device, weights_only=True)["state_dict"]
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if unexpected or any(not k.startswith("llm.rotary") for k in missing):
            raise SystemExit(f"--init {args.init}: missing {missing}, unexpected {unexpected}")
        print(f"initialised from {args.init}", flush=True)
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M", flush=True)

    pool = ClipPool(args.pool, device)
    while len(pool.items) < args.min_clips:
        time.sleep(2)
        pool.refresh()
    started = time.time()
    model.train()
    log: list[dict] = []
    previous = trained
    while trained < args.seconds and time.time() - started < args.time_limit:
        if step % 50 == 0:
            pool.refresh()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, trained / args.seconds, args.lr, args.warmup)
        batch = maker.make(pool, args.batch)
        # fp32 with TF32 matmuls: a bf16 run of this recipe diverged to NaN after ~1000 steps.
        ce, ctc = losses(model, batch, blank)
        loss = ce + ctc
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not torch.isfinite(norm):  # skip a step with a non-finite loss or gradient
            continue
        optimizer.step()
        step += 1
        trained = previous + time.time() - started
        if step % 100 == 0:
            entry = {
                "step": step,
                "ce": round(ce.item(), 4),
                "ctc": round(ctc.item(), 4),
                "lr": optimizer.param_groups[0]["lr"],
                "clips": len(pool.items),
                "elapsed": round(time.time() - started, 1),
            }
            log.append(entry)
            print(json.dumps(entry), flush=True)
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "trained": trained},
        state_path,
    )
    with (args.work / "log.jsonl").open("a") as f:
        for entry in log:
            f.write(json.dumps(entry) + "\n")
    print(f"saved step {step} to {state_path}", flush=True)
    if args.snapshot:
        args.snapshot.mkdir(parents=True, exist_ok=True)
        weights = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
        # Files of at most ~10 MB: the device returns files up to 16 MB.
        parts: list[list[str]] = [[] for _ in range(3)]
        totals = [0, 0, 0]
        for key in sorted(weights, key=lambda k: -weights[k].numel()):
            smallest = totals.index(min(totals))
            parts[smallest].append(key)
            totals[smallest] += weights[key].numel()
        for i, part in enumerate(parts):
            torch.save(
                {**{k: weights[k] for k in part}, "step": torch.tensor(step), "trained": torch.tensor(trained)},
                args.snapshot / f"weights-{i}.pt",
            )
    if args.export and trained >= args.seconds:
        from training.export import export

        export(
            model,
            sizes,
            args.base,
            args.export,
            {"steps": step, "seconds": round(trained), "batch": args.batch, "clips": len(pool.items)},
        )
        print(f"exported to {args.export}", flush=True)


if __name__ == "__main__":
    main()
