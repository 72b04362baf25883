"""A pure-Python LLM backend: a random first-order Markov chain read from ``markov.json``.

It honours the whole LLMBackend contract (sampling parameters, allowed ids, stop ids, seed,
streaming, cancellation) without torch, which makes it a handy template for backend authors.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from flashtts_core import BackendConfig, LLMBackend, SamplingParams


class MarkovBackend(LLMBackend):
    name = "markov"
    extra = ""
    requires = ("numpy",)
    description = "example: a Markov chain in numpy"

    def __init__(self, table: np.ndarray, seed: int):
        self.table = table  # (vocab, vocab) logits of the next token given the last
        self._seeds = random.Random(seed)
        self.active = 0

    @classmethod
    async def create(cls, config: BackendConfig) -> "MarkovBackend":
        spec = json.loads((Path(config.model_path) / "markov.json").read_text())
        rng = np.random.default_rng(spec["seed"])
        table = rng.normal(0.0, spec.get("scale", 2.0), size=(spec["vocab_size"], spec["vocab_size"]))
        return cls(table.astype(np.float32), config.seed)

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        rng = np.random.default_rng(params.seed if params.seed is not None else self._seeds.randrange(2**32))
        vocab = self.table.shape[0]
        allowed = None
        if params.allowed_token_ids is not None:
            allowed = np.full(vocab, -np.inf, dtype=np.float32)
            allowed[[i for i in {*params.allowed_token_ids, *params.stop_token_ids} if 0 <= i < vocab]] = 0.0
        seen = list(prompt_ids)
        self.active += 1
        try:
            for step in range(params.max_tokens):
                logits = self.table[seen[-1] % vocab].copy()
                if allowed is not None:
                    logits += allowed
                if params.repetition_penalty != 1.0:
                    ids = np.unique([s for s in seen if s < vocab])
                    logits[ids] = np.where(
                        logits[ids] > 0,
                        logits[ids] / params.repetition_penalty,
                        logits[ids] * params.repetition_penalty,
                    )
                if params.temperature == 0:
                    token = int(np.argmax(logits))
                else:
                    z = logits / params.temperature
                    if 0 < params.top_k < vocab:
                        z[z < np.sort(z)[-params.top_k]] = -np.inf
                    p = np.exp(z - z.max())
                    p /= p.sum()
                    token = int(rng.choice(vocab, p=p))
                if token in params.stop_token_ids and step >= params.min_tokens:
                    return
                seen.append(token)
                yield [token]
                await asyncio.sleep(0)  # a real backend yields the loop between steps too
        finally:
            self.active -= 1
