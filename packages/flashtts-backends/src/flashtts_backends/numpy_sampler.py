"""Per-sequence sampling on logits with numpy: the same semantics as TorchSampler, for backends
that hand us raw logits (llama-cpp) without pulling torch in."""

from __future__ import annotations

from typing import Optional

import numpy as np
from flashtts_core.sampling import SamplingParams


class NumpySampler:
    """Picks the next token of one sequence from a (vocab,) logits row.

    Order, as in TorchSampler: allowed-ids mask, repetition penalty over prompt + output, min_tokens,
    then greedy, or temperature → top-k → top-p → a draw from the sequence's own seeded generator.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, seed: Optional[int]):
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.stop_ids = np.array(sorted({i for i in params.stop_token_ids if 0 <= i < vocab_size}), dtype=np.int64)
        self.allowed: Optional[np.ndarray] = None
        if params.allowed_token_ids is not None:
            allowed = {*params.allowed_token_ids, *params.stop_token_ids}
            self.allowed = np.array(sorted(i for i in allowed if 0 <= i < vocab_size), dtype=np.int64)
        self.seen = np.zeros(vocab_size, dtype=bool)
        self.generated = 0

    def observe(self, token_ids) -> None:
        """Record prompt or output ids for the repetition penalty."""
        ids = np.asarray(token_ids, dtype=np.int64)
        self.seen[ids[(ids >= 0) & (ids < self.seen.shape[0])]] = True

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        logits = np.array(logits, dtype=np.float32, copy=True)
        if self.allowed is not None:
            masked = np.full_like(logits, -np.inf)
            masked[self.allowed] = logits[self.allowed]
            logits = masked
        if p.repetition_penalty != 1.0:
            picked = logits[self.seen]
            logits[self.seen] = np.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self.generated < p.min_tokens and self.stop_ids.size:
            logits[self.stop_ids] = -np.inf
        self.generated += 1
        if p.temperature == 0:
            return int(np.argmax(logits))
        logits = logits / p.temperature
        vocab = logits.shape[0]
        if 0 < p.top_k < vocab:
            kth = np.partition(logits, vocab - p.top_k)[vocab - p.top_k]
            logits[logits < kth] = -np.inf
        candidates = np.flatnonzero(np.isfinite(logits))
        values = logits[candidates]
        order = np.argsort(-values, kind="stable")
        candidates, values = candidates[order], values[order]
        probs = np.exp(values - values[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            # Keep the token that crosses top_p, as TorchSampler does.
            keep = (np.cumsum(probs) - probs) <= p.top_p
            candidates, probs = candidates[keep], probs[keep]
            probs /= probs.sum()
        return int(candidates[self.rng.choice(len(candidates), p=probs)])
