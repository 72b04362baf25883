"""Continuous batching for the torch backend: one scheduler thread, one batched decode step over
every active sequence.

Each new sequence is prefilled on its own, then its KV cache joins the batch. Rows of different
lengths share one left-padded cache: an attention mask hides the padding and per-row position ids
keep RoPE positions right, so a row decodes the same tokens as it would alone. Finished or
cancelled rows leave the batch at the next step and free their slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .scheduled_stream import DONE, ScheduledSequence, SchedulerThread
from .torch_sampler import TorchSampler

logger = logging.getLogger("flashtts.backend.torch")


@dataclass(eq=False)
class Sequence(ScheduledSequence):
    sampler: TorchSampler
    seen: torch.Tensor | None = None  # prompt + output ids, for the repetition penalty
    pad: int = 0  # left-padding columns of this row in the batch cache


class BatchScheduler(SchedulerThread):
    """Runs prefill and batched decode steps in one thread for up to ``max_batch`` sequences."""

    def __init__(self, model, device: str, max_batch: int, restrict_head: bool = True):
        from .torch_head import OutputHead

        self.model = model
        self.head = OutputHead(model, enabled=restrict_head)
        self.device = device
        self.max_batch = max_batch
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (B, heads, L, head_dim)
        # The cache decode steps write into (torch_kv); None after rows joined or left (built anew).
        self._cache = None
        super().__init__("torch", logger)

    @property
    def active(self) -> int:
        """Sequences holding a batch slot right now."""
        return len(self._active)

    # -- the scheduler thread ------------------------------------------------------------------

    def _take_joining(self) -> tuple[list, list]:
        room = self.max_batch - len(self._active)
        joining, self._waiting = self._waiting[:room], self._waiting[room:]
        return joining, []

    def _step(self, joining: list) -> None:
        with torch.inference_mode():
            cancelled = [s for s in self._active if s.cancel.is_set()]
            self._drop(cancelled)
            for seq in cancelled:
                seq.emit(DONE)
            for seq in joining:
                self._admit(seq)
            if self._active:
                self._decode_step()

    def _failed(self, sequences: list) -> None:
        self._kv, self._cache = [], None

    def _admit(self, seq: Sequence) -> None:
        """Prefill one prompt alone, sample its first token, and add its cache to the batch."""
        from transformers import DynamicCache

        if seq.cancel.is_set():
            seq.emit(DONE)
            return
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
        cache = DynamicCache()
        # Only the last position's logits are needed (the full (prompt, vocab) matrix is large).
        [(logits, local)] = self.head.forward([seq.sampler], input_ids=ids, past_key_values=cache, use_cache=True)
        seq.seen = ids[0]
        if not self._take(seq, logits, local):
            seq.emit(DONE)
            return
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._join(seq, kv, len(seq.prompt_ids))

    def _take(self, seq: Sequence, logits: torch.Tensor, local: bool = False) -> bool:
        """Sample one token for ``seq`` and deliver it; False when the sequence has finished (its
        consumer hears DONE from the caller, once the row is out of the batch)."""
        token = seq.sampler(logits, seq.seen, local)
        seq.generated += 1
        if token in seq.params.stop_token_ids or seq.cancel.is_set():
            return False
        seq.emit([token])
        seq.seen = torch.cat([seq.seen, torch.tensor([token], dtype=torch.long, device=self.device)])
        seq.next_input = token
        return seq.generated < seq.max_new

    def _join(self, seq: Sequence, kv: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        self._cache = None
        if not self._active:
            self._kv, seq.pad, self._active = kv, 0, [seq]
            return
        width = self._kv[0][0].shape[2]
        if length < width:
            kv = [(_left_pad(k, width - length), _left_pad(v, width - length)) for k, v in kv]
            seq.pad = width - length
        elif length > width:
            grow = length - width
            self._kv = [(_left_pad(k, grow), _left_pad(v, grow)) for k, v in self._kv]
            for other in self._active:
                other.pad += grow
            seq.pad = 0
        self._kv = [(torch.cat([k, nk]), torch.cat([v, nv])) for (k, v), (nk, nv) in zip(self._kv, kv)]
        self._active.append(seq)

    def _drop(self, finished: list[Sequence]) -> None:
        """Remove finished rows from the batch, then trim padding columns no remaining row needs."""
        if not finished:
            return
        self._cache = None
        keep = [i for i, s in enumerate(self._active) if s not in finished]
        self._active = [self._active[i] for i in keep]
        if not self._active:
            self._kv = []
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        trim = min(s.pad for s in self._active)
        self._kv = [(k.index_select(0, index)[:, :, trim:], v.index_select(0, index)[:, :, trim:]) for k, v in self._kv]
        for seq in self._active:
            seq.pad -= trim

    def _decode_step(self) -> None:
        from .torch_kv import growing_cache

        rows = self._active
        width = self._kv[0][0].shape[2]
        input_ids = torch.tensor([[s.next_input] for s in rows], dtype=torch.long, device=self.device)
        mask = torch.ones((len(rows), width + 1), dtype=torch.long, device=self.device)
        for i, seq in enumerate(rows):
            mask[i, : seq.pad] = 0
        # A row's position is the number of real tokens before the new one.
        positions = torch.tensor([[width - s.pad] for s in rows], dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache = growing_cache(self._kv)
        cache = self._cache
        logits = self.head.forward(
            [s.sampler for s in rows],
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        self._kv = [(layer.keys, layer.values) for layer in cache.layers]
        finished = [seq for seq, (row, local) in zip(rows, logits) if not self._take(seq, row, local)]
        self._drop(finished)
        for seq in finished:
            seq.emit(DONE)


def _left_pad(kv: torch.Tensor, columns: int) -> torch.Tensor:
    """``columns`` zero positions before a (batch, heads, length, head_dim) cache tensor."""
    pad = kv.new_zeros((kv.shape[0], kv.shape[1], columns, kv.shape[3]))
    return torch.cat([pad, kv], dim=2)
