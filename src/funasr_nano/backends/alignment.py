"""CTC forced alignment, batched in torch on the log-probabilities' device, with the exact algorithm
of ``torchaudio.functional.forced_align`` (its CPU kernel, which the official toolkit runs):

* states 0..2L (blank, token 0, blank, token 1, ... blank); a state is computed only inside
  torchaudio's window (``start``/``end``: the states that can still start and finish in time);
* each step takes the best of staying (x0), advancing one state (x1) and skipping a blank (x2, only
  onto a token that differs from the one two states back); a move is taken only if it is strictly
  better than both others, else the path stays (``x2 > x1 && x2 > x0`` → 2, else
  ``x1 > x0 && x1 > x2`` → 1, else 0: torchaudio 2.11's kernel, checked against it on tie-heavy
  inputs), the same float32 sums;
* the path ends on the final blank only if that is strictly better (``alpha[S-1] > alpha[S-2]``),
  else on the last token;
* a target needs ``T >= L + repeats`` frames, else there is no alignment (torchaudio raises; the
  official toolkit then reports no timestamps).

The forward pass runs on the device for the whole batch at once; the backtrace runs on the CPU over
the int8 back-pointers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class TokenSpan:
    """One target token's frames: ``start`` inclusive, ``end`` exclusive; ``score`` is its best frame's
    probability (the official ``score``: the max of exp(log-prob) over its frames, unrounded)."""

    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Alignment:
    spans: list[TokenSpan]  # one per target token, in order
    frames: int  # frames of the emission


def repeats(targets: Sequence[int]) -> int:
    return sum(1 for a, b in zip(targets, targets[1:], strict=False) if a == b)


def alignable(frames: int, targets: Sequence[int]) -> bool:
    return len(targets) > 0 and frames >= len(targets) + repeats(targets)


def windows(frames: int, targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """torchaudio's ``start``/``end`` for each frame: the states computed at frame t are [start, end)."""
    length, total = len(targets), len(targets) + repeats(targets)
    states = 2 * length + 1
    starts = np.empty(frames, dtype=np.int64)
    ends = np.empty(frames, dtype=np.int64)
    start = 0 if frames - total > 0 else 1
    end = 1 if states == 1 else 2
    starts[0], ends[0] = start, end
    for t in range(1, frames):
        if frames - t <= total:
            if start % 2 == 1 and targets[start // 2] != targets[start // 2 + 1]:
                start += 1
            start += 1
        if t <= total:
            if end % 2 == 0 and end < 2 * length and targets[end // 2 - 1] != targets[end // 2]:
                end += 1
            end += 1
        starts[t], ends[t] = start, end
    return starts, ends


def forced_align(emissions: Sequence[torch.Tensor], targets: Sequence[Sequence[int]]) -> list[Alignment | None]:
    """Align each target to its emission.

    emissions[i]: [T_i, 1 + L_i] float log-probabilities on one device, column 0 the blank's, column
    1 + k target token k's (the gathered columns of the full log-softmax). targets[i]: the L_i token
    ids (only their equality matters). Returns one Alignment per input, None where none exists.
    """
    results: list[Alignment | None] = [None] * len(emissions)
    todo = [i for i, (e, t) in enumerate(zip(emissions, targets, strict=True)) if alignable(e.shape[0], t)]
    if not todo:
        return results
    device = emissions[todo[0]].device
    batch = len(todo)
    frames = [emissions[i].shape[0] for i in todo]
    states = [2 * len(targets[i]) + 1 for i in todo]
    t_max, s_max = max(frames), max(states)
    # Per-state emissions [B, T, S]: even states read the blank column, odd state 2k+1 token k's column.
    columns = torch.zeros(batch, s_max, dtype=torch.long)
    skip = torch.zeros(batch, s_max, dtype=torch.bool)
    window = torch.zeros(batch, t_max, s_max, dtype=torch.bool)
    state_index = torch.arange(s_max)
    for b, i in enumerate(todo):
        target = list(targets[i])
        n = states[b]
        columns[b, 1:n:2] = torch.arange(1, len(target) + 1)
        odd = torch.tensor([k >= 1 and target[k] != target[k - 1] for k in range(len(target))], dtype=torch.bool)
        skip[b, 1:n:2] = odd
        starts, ends = windows(frames[b], target)
        window[b, : frames[b]] = (state_index >= torch.from_numpy(starts)[:, None]) & (
            state_index < torch.from_numpy(ends)[:, None]
        )
    em = torch.full((batch, t_max, s_max), NEG_INF, dtype=torch.float32, device=device)
    for b, i in enumerate(todo):
        em[b, : frames[b]] = emissions[i].to(device=device, dtype=torch.float32)[:, columns[b].to(device)]
    window = window.to(device)
    skip = skip.to(device)
    lengths = torch.tensor(frames, device=device)
    # alpha keeps two -inf cells in front, so x1 and x2 are plain shifted views.
    alpha = torch.full((batch, s_max + 2), NEG_INF, dtype=torch.float32, device=device)
    alpha[:, 2:] = torch.where(window[:, 0], em[:, 0], NEG_INF)
    back = torch.zeros(batch, t_max, s_max, dtype=torch.int8, device=device)
    neg_inf = torch.tensor(NEG_INF, device=device)
    for t in range(1, t_max):
        x0, x1 = alpha[:, 2:], alpha[:, 1:-1]
        x2 = torch.where(skip, alpha[:, :-2], neg_inf)
        take2 = (x2 > x1) & (x2 > x0)
        take1 = ~take2 & (x1 > x0) & (x1 > x2)
        best = torch.where(take2, x2, torch.where(take1, x1, x0))
        back[:, t] = take2.to(torch.int8) * 2 + take1.to(torch.int8)
        step = torch.where(window[:, t], best + em[:, t], neg_inf)
        # a shorter emission keeps its last alphas
        alpha[:, 2:] = torch.where((t < lengths)[:, None], step, x0)
    final = alpha[:, 2:].cpu().numpy()
    back_cpu = back.cpu().numpy()
    em_cpu = em.cpu().numpy()
    for b, i in enumerate(todo):
        n, count = states[b], frames[b]
        state = n - 1 if final[b, n - 1] > final[b, n - 2] else n - 2
        path = np.empty(count, dtype=np.int64)
        for t in range(count - 1, -1, -1):
            path[t] = state
            state -= int(back_cpu[b, t, state])
        results[i] = Alignment(_spans(path, em_cpu[b, :count]), count)
    return results


def _spans(path: np.ndarray, em: np.ndarray) -> list[TokenSpan]:
    """Token spans from a state path (odd states are tokens): frames where the path sits on 2k+1."""
    scores = np.exp(em[np.arange(path.size), path])
    spans: list[TokenSpan] = []
    t = 0
    while t < path.size:
        state = path[t]
        end = t + 1
        while end < path.size and path[end] == state:
            end += 1
        if state % 2 == 1:
            spans.append(TokenSpan(t, end, float(scores[t:end].max())))
        t = end
    return spans


def token_labels(alignment: Alignment, targets: Sequence[int], blank: int) -> list[int]:
    """The per-frame labels torchaudio returns (the path's token id, or ``blank``)."""
    labels = [blank] * alignment.frames
    for span, token in zip(alignment.spans, targets, strict=True):
        labels[span.start : span.end] = [token] * (span.end - span.start)
    return labels


@dataclass(frozen=True)
class CTCResult:
    """What the CTC head gives one segment: its alignment (None where none exists) and the per-frame
    argmax ids (the greedy CTC transcript before merging)."""

    alignment: Alignment | None
    greedy: list[int]
