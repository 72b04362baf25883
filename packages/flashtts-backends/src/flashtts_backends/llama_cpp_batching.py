"""Batched decoding on one llama.cpp context: concurrent requests share each step's weight read.

One scheduler thread owns the context. A new sequence gets a sequence id (a slot) and its prompt is
evaluated alone; then every active sequence feeds its last token into one ``llama_batch`` (token i
tagged with its own sequence id) and one ``llama_decode`` computes all their logits. Each row is
sampled with its own :class:`NumpySampler`, so results do not depend on who else is in the batch.

The KV cache is unified (one pool of ``n_ctx`` cells shared by all slots): a sequence is admitted
only when its worst case (prompt + max_new cells) fits beside the ones running, so a decode never
runs out of cells. A finished slot keeps its cache, and a prompt that starts the same way as any
slot's tokens (Spark's cloning prompts repeat the reference's tokens) reuses that prefix, also
from a slot still running.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .numpy_sampler import NumpySampler
from .scheduled_stream import DONE, ScheduledSequence, SchedulerThread

logger = logging.getLogger("flashtts.backend.llama_cpp")


@dataclass(eq=False)
class Sequence(ScheduledSequence):
    sampler: NumpySampler
    slot: int = -1
    position: int = 0  # cells this sequence holds in its slot


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # what the slot's cache holds, in order
    busy: bool = False
    used: int = 0  # a counter for least-recently-used eviction


@dataclass
class ReducedVocabulary:
    """The reduced model's rows (``kept``: full token ids, ascending) and the full embedding table
    its prompts are read from (a callable: token ids -> (n, n_embd) float32)."""

    kept: np.ndarray
    embeddings: Callable[[list[int]], np.ndarray]
    n_embd: int
    n_vocab: int  # the full vocabulary

    def __post_init__(self) -> None:
        self.row = {int(t): r for r, t in enumerate(self.kept)}

    def close(self) -> None:
        close = getattr(self.embeddings, "close", None)
        if close is not None:
            close()


class LlamaBatchScheduler(SchedulerThread):
    """Owns ``ctx`` (a llama_context with ``n_seq`` sequence ids and ``n_ctx`` unified cells)."""

    def __init__(
        self, ctx, n_vocab: int, n_ctx: int, n_seq: int, n_batch: int, reduced: Optional[ReducedVocabulary] = None
    ):
        import llama_cpp as lc

        self._lc = lc
        self.ctx = ctx
        self.memory = lc.llama_get_memory(ctx)
        self.n_vocab = n_vocab  # logits per row: the model's vocabulary (the reduced one's size)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.reduced = reduced
        self._batch = lc.llama_batch_init(max(n_batch, n_seq), 0, 1)
        self._embd_batch = lc.llama_batch_init(n_batch, reduced.n_embd, 1) if reduced is not None else None
        self._slots = [_Slot() for _ in range(n_seq)]
        self._clock = 0
        self._reserved = 0  # cells promised to running sequences (worst case)
        self.steps = 0  # batched decode steps so far (each one llama_decode over every running row)
        super().__init__("llama-cpp", logger)

    @property
    def active(self) -> int:
        return len(self._active) + len(self._waiting)

    def close(self, timeout: float = 60) -> bool:
        stopped = super().close(timeout)
        if stopped:
            self._lc.llama_batch_free(self._batch)
            if self._embd_batch is not None:
                self._lc.llama_batch_free(self._embd_batch)
        return stopped

    # -- the scheduler thread ------------------------------------------------------------------

    def _take_joining(self) -> tuple[list, list]:
        dropped = [s for s in self._waiting if s.cancel.is_set()]
        self._waiting = [s for s in self._waiting if not s.cancel.is_set()]
        joining = []
        while self._waiting and self._fits(self._waiting[0], joining):
            joining.append(self._waiting.pop(0))
        return joining, dropped

    def _step(self, joining: list) -> None:
        for seq in [s for s in self._active if s.cancel.is_set()]:
            self._finish(seq)
        for seq in joining:
            self._admit(seq)
        if self._active:
            self._decode_step()

    def _failed(self, sequences: list) -> None:
        for seq in sequences:
            if seq.slot >= 0:
                self._release(seq, keep=False)

    def _fits(self, seq: Sequence, joining: list[Sequence]) -> bool:
        busy = len(self._active) + len(joining)
        if busy >= len(self._slots):
            return False
        need = len(seq.prompt_ids) + seq.max_new
        promised = self._reserved + sum(len(s.prompt_ids) + s.max_new for s in joining)
        return promised + need <= self.n_ctx

    def _admit(self, seq: Sequence) -> None:
        """Pick a slot (the free one sharing the longest prefix), evaluate the rest of the prompt,
        sample the first token and join the batch."""
        if seq.cancel.is_set():
            seq.emit(DONE)
            return
        free = [i for i, slot in enumerate(self._slots) if not slot.busy]
        shared, index = max((_shared_prefix(self._slots[i].tokens, seq.prompt_ids), i) for i in free)
        if shared == 0:  # no reuse: take the least recently used slot
            index = min(free, key=lambda i: self._slots[i].used)
        # Another slot (even a running one: concurrent clones of one voice) may hold a longer prefix:
        # its cells are shared into this slot (a unified cache tags cells per sequence; no copy).
        source_shared, source = max((_shared_prefix(s.tokens, seq.prompt_ids), i) for i, s in enumerate(self._slots))
        # Re-evaluate at least the last prompt token, so the logits are this prompt's.
        last = len(seq.prompt_ids) - 1
        shared, source_shared = min(shared, last), min(source_shared, last)
        slot = self._slots[index]
        slot.busy, self._clock = True, self._clock + 1
        slot.used = self._clock
        seq.slot = index
        if source_shared > shared and source != index:
            self._lc.llama_memory_seq_rm(self.memory, index, -1, -1)
            self._lc.llama_memory_seq_cp(self.memory, source, index, 0, source_shared)
            shared = source_shared
        else:
            self._lc.llama_memory_seq_rm(self.memory, index, shared, -1)
        slot.tokens = list(seq.prompt_ids[:shared])
        need = len(seq.prompt_ids) + seq.max_new
        self._reserved += need
        self._make_room(need)
        rest = seq.prompt_ids[shared:]
        batch = self._batch if self.reduced is None else self._embd_batch
        for start in range(0, len(rest), self.n_batch):
            chunk = rest[start : start + self.n_batch]
            last = start + len(chunk) == len(rest)
            entries = [(t, shared + start + j, index, last and j == len(chunk) - 1) for j, t in enumerate(chunk)]
            if self.reduced is None:
                self._fill(entries)
            else:
                self._fill_embeddings(entries)
            self._decode(batch)
        slot.tokens.extend(rest)
        seq.position = len(seq.prompt_ids)
        seq.sampler.observe(seq.prompt_ids)
        self._active.append(seq)
        if not self._take(seq, self._logits(batch.n_tokens - 1)):
            self._finish(seq)

    def _make_room(self, need: int) -> None:
        """Drop the caches of idle slots (least recently used first) until ``need`` more cells fit."""
        held = sum(len(s.tokens) for s in self._slots if not s.busy)
        idle = sorted(
            (i for i, s in enumerate(self._slots) if not s.busy and s.tokens), key=lambda i: self._slots[i].used
        )
        for i in idle:
            if self._reserved + held <= self.n_ctx:
                break
            held -= len(self._slots[i].tokens)
            self._lc.llama_memory_seq_rm(self.memory, i, -1, -1)
            self._slots[i].tokens = []

    def _decode_step(self) -> None:
        rows = list(self._active)
        if self.reduced is None:
            self._fill([(s.next_input, s.position, s.slot, True) for s in rows])
        else:  # a generated token is always one of the kept rows
            row = self.reduced.row
            self._fill([(row[s.next_input], s.position, s.slot, True) for s in rows])
        self._decode()
        self.steps += 1
        for i, seq in enumerate(rows):
            self._slots[seq.slot].tokens.append(seq.next_input)
            seq.position += 1
            if not self._take(seq, self._logits(i)):
                self._finish(seq)

    def _take(self, seq: Sequence, logits: np.ndarray) -> bool:
        """Sample one token and deliver it; False when the sequence has finished."""
        token = seq.sampler(logits)
        seq.generated += 1
        if token in seq.params.stop_token_ids or seq.cancel.is_set():
            return False
        seq.emit([token])
        seq.sampler.observe([token])
        seq.next_input = token
        return seq.generated < seq.max_new

    def _finish(self, seq: Sequence) -> None:
        self._active.remove(seq)
        self._release(seq, keep=True)
        seq.emit(DONE)

    def _release(self, seq: Sequence, keep: bool) -> None:
        slot = self._slots[seq.slot]
        slot.busy = False
        self._reserved -= len(seq.prompt_ids) + seq.max_new
        if not keep:
            self._lc.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
            slot.tokens = []
        seq.slot = -1

    # -- llama.cpp calls -------------------------------------------------------------------------

    def _fill(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """(token, position, sequence id, wants logits) per batch entry."""
        batch = self._batch
        for i, (token, pos, seq_id, logits) in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(tokens)

    def _fill_embeddings(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """As :meth:`_fill`, each token given as its row of the full embedding table."""
        batch = self._embd_batch
        rows = self.reduced.embeddings([t for t, _, _, _ in tokens])
        ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
        for i, (_, pos, seq_id, logits) in enumerate(tokens):
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(tokens)

    def _decode(self, batch=None) -> None:
        status = self._lc.llama_decode(self.ctx, self._batch if batch is None else batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._lc.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
