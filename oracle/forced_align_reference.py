"""A line-by-line transcription of torchaudio's CPU ``forced_align`` kernel
(src/libtorchaudio/forced_align/cpu/compute.cpp, as built into torchaudio 2.11: a move to state i-1 is
taken only if it beats both staying and skipping), in plain Python over numpy float32, for comparing
funasr_nano.backends.alignment with where torchaudio cannot run. Returns the per-frame labels, or raises
ValueError where torchaudio raises (too few frames)."""

from __future__ import annotations

import numpy as np


def torchaudio_forced_align(log_probs: np.ndarray, targets: list[int], blank: int) -> list[int]:
    log_probs = np.asarray(log_probs, dtype=np.float32)
    neg_inf = np.float32(-np.inf)
    T, L = log_probs.shape[0], len(targets)
    S = 2 * L + 1
    alphas = np.full(2 * S, neg_inf, dtype=np.float32)
    back = np.full(T * S, -1, dtype=np.int8)
    R = sum(1 for i in range(1, L) if targets[i] == targets[i - 1])
    if T < L + R:
        raise ValueError("targets length is too long for CTC")
    start = 0 if T - (L + R) > 0 else 1
    end = 1 if S == 1 else 2
    for i in range(start, end):
        label = blank if i % 2 == 0 else targets[i // 2]
        alphas[i] = log_probs[0, label]
    for t in range(1, T):
        if T - t <= L + R:
            if start % 2 == 1 and targets[start // 2] != targets[start // 2 + 1]:
                start += 1
            start += 1
        if t <= L + R:
            if end % 2 == 0 and end < 2 * L and targets[end // 2 - 1] != targets[end // 2]:
                end += 1
            end += 1
        startloop = start
        cur, prev = t % 2, (t - 1) % 2
        alphas[cur * S : cur * S + S] = neg_inf
        if start == 0:
            alphas[cur * S] = np.float32(alphas[prev * S] + log_probs[t, blank])
            back[S * t] = 0
            startloop += 1
        for i in range(startloop, end):
            x0 = alphas[prev * S + i]
            x1 = alphas[prev * S + i - 1]
            x2 = neg_inf
            label = blank if i % 2 == 0 else targets[i // 2]
            if i % 2 != 0 and i != 1 and targets[i // 2] != targets[i // 2 - 1]:
                x2 = alphas[prev * S + i - 2]
            if x2 > x1 and x2 > x0:
                result, back[t * S + i] = x2, 2
            elif x1 > x0 and x1 > x2:
                result, back[t * S + i] = x1, 1
            else:
                result, back[t * S + i] = x0, 0
            alphas[cur * S + i] = np.float32(result + log_probs[t, label])
    idx1 = (T - 1) % 2
    ltr = S - 1 if alphas[S * idx1 + S - 1] > alphas[S * idx1 + S - 2] else S - 2
    paths = [0] * T
    for t in range(T - 1, -1, -1):
        paths[t] = blank if ltr % 2 == 0 else targets[ltr // 2]
        ltr -= int(back[t * S + ltr])
    return paths
