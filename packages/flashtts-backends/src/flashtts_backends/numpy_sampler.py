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
    With ``allowed_token_ids`` every step works on those rows only (Spark's 8k of 166k), which is
    most of the sampling cost saved; ties still go to the lowest token id, as over the full row.
    ``logit_ids`` (ascending token ids) says which token each logit is when a row holds only those
    (llama-cpp's reduced vocabulary); every allowed id must be one of them.
    """

    def __init__(
        self, params: SamplingParams, vocab_size: int, seed: Optional[int], logit_ids: Optional[np.ndarray] = None
    ):
        self.params = params
        self.rng = np.random.default_rng(seed)
        stop_ids = np.array(sorted({i for i in params.stop_token_ids if 0 <= i < vocab_size}), dtype=np.int64)
        self.allowed: Optional[np.ndarray] = None
        self.columns: Optional[np.ndarray] = None  # where the allowed ids are in a logits row
        if params.allowed_token_ids is not None:
            allowed = {*params.allowed_token_ids, *params.stop_token_ids}
            self.allowed = np.array(sorted(i for i in allowed if 0 <= i < vocab_size), dtype=np.int64)
            stop_ids = np.searchsorted(self.allowed, stop_ids)  # stop ids are all candidates
            self.columns = self.allowed
            if logit_ids is not None:
                self.columns = np.searchsorted(logit_ids, self.allowed)
                inside = self.columns < len(logit_ids)
                if not inside.all() or not np.array_equal(logit_ids[self.columns], self.allowed):
                    raise ValueError("allowed token ids outside the logits' rows")
        elif logit_ids is not None:
            raise ValueError("a row of some tokens' logits needs allowed_token_ids")
        self.stop_ids = stop_ids  # indices into the candidate row
        self.seen = np.zeros(vocab_size, dtype=bool)
        self.generated = 0

    def observe(self, token_ids) -> None:
        """Record prompt or output ids for the repetition penalty."""
        ids = np.asarray(token_ids, dtype=np.int64)
        self.seen[ids[(ids >= 0) & (ids < self.seen.shape[0])]] = True

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if self.allowed is not None:
            logits = np.asarray(logits, dtype=np.float32)[self.columns]
            seen = self.seen[self.allowed]
        else:
            logits = np.array(logits, dtype=np.float32, copy=True)
            seen = self.seen
        if p.repetition_penalty != 1.0:
            picked = logits[seen]
            logits[seen] = np.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self.generated < p.min_tokens and self.stop_ids.size:
            logits[self.stop_ids] = -np.inf
        self.generated += 1
        if p.temperature == 0:
            return self._token(int(np.argmax(logits)))
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
        return self._token(int(candidates[self.rng.choice(len(candidates), p=probs)]))

    def _token(self, index: int) -> int:
        return int(self.allowed[index]) if self.allowed is not None else index
