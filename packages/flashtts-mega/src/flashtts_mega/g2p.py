"""Grapheme to phoneme with MegaTTS3's ``g2p/`` Qwen2 LLM, run on the user's LLM backend.

Upstream (tts/frontend_function.py ``g2p``): the prompt is the tokenized ``<BOT>{text}<BOS>`` plus the
start token ``<Reserved_TTS_0>`` + 145 ('sil'); generation is greedy, at most 256 new tokens, and stops
at ``<Reserved_TTS_0>`` + 801. The phones are the start token and everything generated before the
stop, minus the ``<Reserved_TTS_0>`` offset, split into phone and tone ids (``phones.split_ph``).

Here every generated token is also limited to the legal phone tokens and the stop token
(``allowed_token_ids``), so even a random model yields a well-formed phone sequence, and the token
budget is bounded by the text so a model that never stops cannot run away on a short text.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Optional

import torch
from flashtts_core.errors import ModelLoadError
from flashtts_core.sampling import SamplingParams

from .phones import G2P_START_OFFSET, G2P_STOP_OFFSET, g2p_allowed_token_ids, legal_phone_tokens, split_ph

logger = logging.getLogger("flashtts.mega")

RESERVED_TTS_0 = "<Reserved_TTS_0>"
MAX_NEW_TOKENS = 256  # upstream's max_new_tokens
# Upstream stops at +801, so its output spans at least 802 reserved tokens.
MIN_RESERVED_TOKENS = G2P_STOP_OFFSET + 1

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Markup a user may type (``<BOS>``, ``<Reserved_TTS_9>``) would otherwise become prompt tokens.
_MARKUP = re.compile(r"<(?=[A-Za-z_|/])")


def token_budget(text: str) -> int:
    """The most phones ``text`` can plausibly need, capped at upstream's 256.

    A Chinese character is two phones (initial and final), an English letter at most one, each
    punctuation mark one; this allows 1.5x that plus a few for pauses.
    """
    han = len(_HAN.findall(text))
    other = sum(1 for ch in text if not ch.isspace()) - han
    return max(4, min(MAX_NEW_TOKENS, math.ceil(1.5 * (2 * han + other)) + 4))


class G2P:
    """The G2P prompt, sampling parameters and output parsing for one tokenizer; ``run`` uses a backend."""

    def __init__(self, tokenizer, backend=None):
        self.tokenizer = tokenizer
        self.backend = backend
        vocab = tokenizer.get_vocab()
        if RESERVED_TTS_0 not in vocab:
            raise ModelLoadError(f"the g2p tokenizer has no {RESERVED_TTS_0} token; is this MegaTTS3's g2p/ folder?")
        self.reserved_0 = int(tokenizer.encode(RESERVED_TTS_0, add_special_tokens=False)[0])
        top = f"<Reserved_TTS_{G2P_STOP_OFFSET}>"
        if vocab.get(top) != self.reserved_0 + G2P_STOP_OFFSET:
            raise ModelLoadError(
                f"the g2p tokenizer's {top} is not {RESERVED_TTS_0} + {G2P_STOP_OFFSET}: MegaTTS3's G2P needs "
                f"{MIN_RESERVED_TOKENS} consecutive <Reserved_TTS_k> tokens"
            )
        self.start_id = self.reserved_0 + G2P_START_OFFSET
        self.stop_id = self.reserved_0 + G2P_STOP_OFFSET
        self.allowed_ids = tuple(g2p_allowed_token_ids(self.reserved_0))
        self._legal = frozenset(legal_phone_tokens())

    @staticmethod
    def output_token_ids(tokenizer) -> Optional[tuple[int, ...]]:
        """The ids the G2P LLM may emit (phone tokens and the stop token), or None where the
        tokenizer is not MegaTTS3's (the constructor then says why)."""
        reserved = tokenizer.get_vocab().get(RESERVED_TTS_0)
        if reserved is None:
            return None
        return (*g2p_allowed_token_ids(int(reserved)), int(reserved) + G2P_STOP_OFFSET)

    @classmethod
    def load_tokenizer(cls, folder: Path):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the g2p tokenizer in {folder}: {exc}") from None

    def prompt(self, text: str) -> list[int]:
        """``<BOT>{text}<BOS>`` tokenized as upstream, then the start token."""
        safe = _MARKUP.sub("< ", text)
        ids = self.tokenizer("<BOT>" + safe + "<BOS>", add_special_tokens=False)["input_ids"]
        return [int(i) for i in ids] + [self.start_id]

    def params(self, text: str, max_tokens: Optional[int] = None) -> SamplingParams:
        """Greedy, the phone tokens only, stop at +801; at most ``max_tokens`` (else the text's budget)."""
        budget = token_budget(text) if max_tokens is None else min(max_tokens, MAX_NEW_TOKENS)
        return SamplingParams(
            temperature=0.0,
            top_k=1,
            top_p=1.0,
            max_tokens=budget,
            stop_token_ids=(self.stop_id,),
            allowed_token_ids=self.allowed_ids,
        )

    def parse(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated ids -> (phone ids [1, N], tone ids [1, N]), the start token ('sil') first."""
        merged = [G2P_START_OFFSET]
        for token in token_ids:
            if token == self.stop_id:
                break
            value = int(token) - self.reserved_0
            if value not in self._legal:
                raise RuntimeError(f"the LLM backend ignored allowed_token_ids: G2P produced token id {token}")
            merged.append(value)
        ph, tone = split_ph(merged)
        return ph[None], tone[None]

    async def run(self, text: str, max_tokens: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Phones and tones of one normalised text segment."""
        out = await self.backend.generate(self.prompt(text), self.params(text, max_tokens))
        return self.parse(list(out.token_ids))
