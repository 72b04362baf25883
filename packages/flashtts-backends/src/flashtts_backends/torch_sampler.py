"""Per-sequence sampling on logits with torch: every SamplingParams field, reproducible per seed."""

from __future__ import annotations

import torch
from flashtts_core.sampling import SamplingParams


class TorchSampler:
    """Picks the next token of one sequence. Holds its own generator, so concurrent requests with a
    seed stay reproducible."""

    def __init__(self, params: SamplingParams, vocab_size: int, device, seed: int):
        self.params = params
        self.device = device
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.stop_ids = torch.tensor(sorted(set(params.stop_token_ids)), dtype=torch.long, device=device)
        self.allowed_mask = None
        if params.allowed_token_ids is not None:
            allowed = sorted({*params.allowed_token_ids, *params.stop_token_ids})
            allowed = [i for i in allowed if 0 <= i < vocab_size]
            mask = torch.full((vocab_size,), float("-inf"), device=device)
            mask[torch.tensor(allowed, dtype=torch.long, device=device)] = 0.0
            self.allowed_mask = mask
        self.generated = 0

    def __call__(self, logits: torch.Tensor, seen_ids: torch.Tensor) -> int:
        """``logits``: (vocab,) for the next position; ``seen_ids``: prompt + output so far."""
        p = self.params
        logits = logits.float().clone()
        vocab = logits.shape[-1]
        if self.allowed_mask is not None:
            logits = logits + self.allowed_mask[:vocab]
        if p.repetition_penalty != 1.0 and seen_ids.numel():
            ids = torch.unique(seen_ids[seen_ids < vocab])
            picked = logits[ids]
            logits[ids] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self.generated < p.min_tokens and self.stop_ids.numel():
            logits[self.stop_ids[self.stop_ids < vocab]] = float("-inf")
        self.generated += 1
        if p.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        # Work on the top-k candidates only (sorted, best first): sorting a 150k-row vocabulary for
        # top-p on every step of every row costs more than the model step on CPU.
        candidates = None
        if p.top_k and 0 < p.top_k < vocab:
            logits, candidates = torch.topk(logits, p.top_k)
        elif p.top_p < 1.0:
            logits, candidates = torch.sort(logits, descending=True)
        if p.top_p < 1.0:
            probs = torch.softmax(logits, dim=-1)
            drop = torch.cumsum(probs, dim=-1) - probs > p.top_p  # keep the token that crosses top_p
            logits = logits.masked_fill(drop, float("-inf"))
        choice = int(torch.multinomial(torch.softmax(logits, dim=-1).cpu(), 1, generator=self.generator))
        return int(candidates[choice]) if candidates is not None else choice
