"""The output head of a causal LM, computed only over the rows a sequence may sample.

Spark's semantic phase allows 8,193 of 166,000 tokens, Orpheus' audio phase 28k of 157k; the full
head is 0.15 GB (bf16) of weights read per decode step and most of the step on CPU. With
``allowed_token_ids`` the scheduler runs the decoder body only, then multiplies the final hidden
state by a sub-matrix of the head cached per allowed set (phases change sets, so a few are kept).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

logger = logging.getLogger("flashtts.backend.torch")

# Sub-matrices kept (Spark uses four sets: pitch, speed, global, semantic; ~15 MB each in bf16).
MAX_CACHED_SETS = 8


class OutputHead:
    """Logits for a batch of final hidden states, restricted per row to its sampler's candidates.

    Only models whose logits are exactly ``hidden @ W.T (+ b)`` qualify (Qwen2, Llama, …); a model
    with logit soft-capping or scaling keeps the full forward pass (``restricted`` is False).
    """

    def __init__(self, model, enabled: bool = True):
        self.model = model
        head = model.get_output_embeddings()
        config = model.config
        self.restricted = bool(
            enabled
            and isinstance(head, torch.nn.Linear)
            and getattr(config, "final_logit_softcapping", None) is None
            and getattr(config, "logit_scale", None) in (None, 1.0)
            and hasattr(model, "get_decoder")
        )
        self.decoder = model.get_decoder() if self.restricted else None
        self.head = head
        self._sets: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()

    def forward(self, samplers, **inputs) -> list[tuple[torch.Tensor, bool]]:
        """One model call; per row, (logits of the last position, whether they are local to the
        sampler's candidate rows)."""
        if not self.restricted or all(s.rows_key is None for s in samplers):
            out = self.model(**inputs, logits_to_keep=1)
            logits = out.logits[:, -1]
            return [(logits[i], False) for i in range(len(samplers))]
        hidden = self.decoder(**inputs).last_hidden_state[:, -1]
        results: list[tuple[torch.Tensor, bool] | None] = [None] * len(samplers)
        groups: dict[int, tuple[tuple[torch.Tensor, torch.Tensor | None] | None, list[int]]] = {}
        for i, sampler in enumerate(samplers):
            matrix = self._matrix(sampler)
            groups.setdefault(id(matrix), (matrix, []))[1].append(i)
        for matrix, rows in groups.values():
            h = hidden if len(rows) == len(samplers) else hidden[rows]
            if matrix is None:
                logits, local = self.head(h), False
            else:
                logits, local = torch.nn.functional.linear(h, *matrix), True
            for j, i in enumerate(rows):
                results[i] = (logits[j], local)
        return results

    def _matrix(self, sampler) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The head sub-matrix (and bias) of the sampler's candidate rows; looked up by content
        once per sequence, then kept on the sampler."""
        if sampler.rows_key is None:
            return None
        found = getattr(sampler, "head_matrix", None)
        if found is not None:
            return found
        found = self._sets.get(sampler.rows_key)
        if found is None:
            weight = self.head.weight.index_select(0, sampler.rows).contiguous()
            bias = self.head.bias.index_select(0, sampler.rows) if self.head.bias is not None else None
            found = self._sets[sampler.rows_key] = (weight, bias)
            if len(self._sets) > MAX_CACHED_SETS:
                self._sets.popitem(last=False)
            logger.debug("torch backend: output head over %d rows cached", len(sampler.rows_key))
        else:
            self._sets.move_to_end(sampler.rows_key)
        sampler.head_matrix = found
        return found
