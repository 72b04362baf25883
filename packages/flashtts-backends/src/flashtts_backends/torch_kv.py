"""A batch KV cache written in place: each decode step writes one column, reads views.

transformers' DynamicCache concatenates every layer's keys and values at every step (a copy of the
whole cache per token), and the scheduler would rebuild it from tensors each step. Here a layer
keeps (batch, heads, capacity, head_dim) storage with room to grow, ``update`` writes the new
positions into it and returns views of the filled part; capacity doubles when it runs out. The
scheduler keeps one cache across steps and builds a new one only when rows join or leave.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Columns of room a new cache gets beyond what it holds (a step writes one).
HEADROOM = 256


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in preallocated storage (``keys``/``values`` are views of it)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, headroom: int = HEADROOM):
        super().__init__()
        batch, heads, length, dim = keys.shape
        self.dtype, self.device = keys.dtype, keys.device
        self._k = keys.new_empty((batch, heads, length + headroom, dim))
        self._v = values.new_empty((batch, values.shape[1], length + headroom, values.shape[3]))
        self._k[:, :, :length] = keys
        self._v[:, :, :length] = values
        self.length = length
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Storage comes with the layer."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        end = self.length + new
        if end > self._k.shape[2]:
            capacity = max(end, 2 * self._k.shape[2])
            for name in ("_k", "_v"):
                old = getattr(self, name)
                grown = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
                grown[:, :, : self.length] = old[:, :, : self.length]
                setattr(self, name, grown)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the batch cache is trimmed by the scheduler, not cropped")


def growing_cache(kv: list[tuple[torch.Tensor, torch.Tensor]], headroom: int = HEADROOM) -> Cache:
    """A cache holding ``kv`` (per layer (batch, heads, length, head_dim) keys and values)."""
    return Cache(layers=[GrowingLayer(k, v, headroom) for k, v in kv])
