"""The real tiny model behind both stand-ins: token-by-token decoding with a KV cache, through
transformers, one forward pass at a time (a lock keeps concurrent requests apart)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch


class TinyDecoder:
    def __init__(self, model_path: str):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        config = json.loads((Path(model_path) / "config.json").read_text())
        eos = config.get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._lock = threading.Lock()

    def decode(self, prompt_ids: list[int], choose: Callable[[torch.Tensor, list[int]], int]) -> Iterator[int]:
        """Yield tokens forever; ``choose(logits, prompt_and_output_ids)`` picks each. The caller stops."""
        from transformers import DynamicCache

        cache = DynamicCache()
        ids = list(prompt_ids)
        feed = torch.tensor([ids])
        while True:
            with self._lock, torch.inference_mode():
                logits = self.model(input_ids=feed, past_key_values=cache, use_cache=True).logits[0, -1].float()
            token = choose(logits.clone(), ids)
            ids.append(token)
            yield token
            feed = torch.tensor([[token]])


def sample(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    generator: torch.Generator,
) -> int:
    """Temperature, then top-k, then top-p, then a draw; top_k 1 is greedy."""
    if top_k == 1:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p and top_p < 1.0:
        probs, order = torch.sort(torch.softmax(logits, -1), descending=True)
        drop = torch.cumsum(probs, -1) - probs > top_p
        logits[order[drop]] = float("-inf")
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


def repetition_penalty(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    if penalty == 1.0 or not seen:
        return logits
    ids = torch.tensor(sorted(set(seen)))
    picked = logits[ids]
    logits[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits
