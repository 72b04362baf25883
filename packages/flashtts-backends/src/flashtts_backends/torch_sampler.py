"""Per-sequence sampling on logits with torch: every SamplingParams field, reproducible per seed."""

from __future__ import annotations

import torch
from flashtts_core.sampling import SamplingParams

_BIG = torch.finfo(torch.float32).max / 4


class TorchSampler:
    """Picks the next token of one sequence. Holds its own generator, so concurrent requests with a
    seed stay reproducible.

    With ``allowed_token_ids`` it works on those rows only (e.g. Spark's 8k semantic tokens out of a
    166k vocabulary, Orpheus' 28k audio tokens out of 157k), which is both the constraint and most
    of the sampling cost saved.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, device, seed: int):
        self.params = params
        self.device = device
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.rows: torch.Tensor | None = None  # candidate token ids, or None for the whole vocabulary
        self.position: torch.Tensor | None = None  # token id -> index in rows, -1 when not a candidate
        if params.allowed_token_ids is not None:
            allowed = sorted(i for i in {*params.allowed_token_ids, *params.stop_token_ids} if 0 <= i < vocab_size)
            self.rows = torch.tensor(allowed, dtype=torch.long, device=device)
            self.position = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
            self.position[self.rows] = torch.arange(len(allowed), device=device)
        # Identifies the candidate set, so the scheduler can compute logits for these rows only.
        self.rows_key: tuple[int, ...] | None = tuple(allowed) if self.rows is not None else None
        self.head_matrix = None  # the head's sub-matrix for rows_key, set by torch_head.OutputHead
        self.stop = self._local(torch.tensor(sorted(set(params.stop_token_ids)), dtype=torch.long, device=device))
        self.generated = 0

    def _local(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids as indices into the candidate logits."""
        if self.position is None:
            return ids
        ids = ids[ids < self.position.shape[0]]
        local = self.position[ids]
        return local[local >= 0]

    def __call__(self, logits: torch.Tensor, seen_ids: torch.Tensor, local: bool = False) -> int:
        """``logits``: (vocab,) for the next position, or with ``local`` already only the candidate
        rows (in ``rows`` order); ``seen_ids``: prompt + output so far."""
        p = self.params
        logits = logits.float()
        if local:
            logits = logits.clone()
        else:
            logits = logits.index_select(0, self.rows) if self.rows is not None else logits.clone()
        if p.repetition_penalty != 1.0 and seen_ids.numel():
            seen = torch.unique(seen_ids)
            if self.position is None:
                seen = seen[seen < logits.shape[0]]
            idx = self._local(seen)
            picked = logits[idx]
            logits[idx] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self.generated < p.min_tokens and self.stop.numel():
            logits[self.stop] = float("-inf")
        self.generated += 1
        # Extreme penalties can overflow: keep the ordering, drop NaNs.
        logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=_BIG, neginf=float("-inf"))
        if p.temperature == 0 or not torch.isfinite(logits.max()):
            return self._token(int(torch.argmax(logits)))
        logits = (logits - logits.max()) / p.temperature
        # Work on the top-k candidates only (sorted, best first): sorting a large vocabulary for
        # top-p on every step costs more than the model step on CPU.
        candidates = None
        if p.top_k and 0 < p.top_k < logits.shape[0]:
            logits, candidates = torch.topk(logits, p.top_k)
        elif p.top_p < 1.0:
            logits, candidates = torch.sort(logits, descending=True)
        if p.top_p < 1.0:
            probs = torch.softmax(logits, dim=-1)
            drop = torch.cumsum(probs, dim=-1) - probs > p.top_p  # keep the token that crosses top_p
            logits = logits.masked_fill(drop, float("-inf"))
        choice = int(torch.multinomial(torch.softmax(logits, dim=-1).cpu(), 1, generator=self.generator))
        return self._token(int(candidates[choice]) if candidates is not None else choice)

    def _token(self, index: int) -> int:
        return int(self.rows[index]) if self.rows is not None else index
