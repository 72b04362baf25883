"""Stand-in of SGLang's offline Engine API (see ../README.md): the documented surface the
flashtts sglang backend uses, backed by a real tiny model through transformers."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any, AsyncIterator, Optional, Union

import torch
from standin_decoder import TinyDecoder, repetition_penalty, sample

from .srt.sampling.custom_logit_processor import CustomLogitProcessor

TOP_K_ALL = 1 << 30


@dataclasses.dataclass
class ServerArgs:
    """The ServerArgs fields the adapter sets, with SGLang's names; any other keyword is a TypeError."""

    model_path: str
    skip_tokenizer_init: bool = False
    dtype: str = "auto"
    context_length: Optional[int] = None
    max_running_requests: Optional[int] = None
    mem_fraction_static: Optional[float] = None
    tp_size: int = 1
    device: Optional[str] = None
    base_gpu_id: int = 0
    random_seed: Optional[int] = None
    enable_custom_logit_processor: bool = False
    log_level: str = "info"


@dataclasses.dataclass
class SamplingParams:
    """SGLang's sampling parameters (names, defaults and checks of sampling_params.py)."""

    max_new_tokens: Optional[int] = 128
    stop_token_ids: Optional[list[int]] = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    ignore_eos: bool = False
    custom_params: Optional[dict[str, Any]] = None
    sampling_seed: Optional[int] = None

    def __post_init__(self):
        if 0 <= self.temperature < 1e-6:
            self.temperature, self.top_k = 1.0, 1
        if self.top_k == -1:
            self.top_k = TOP_K_ALL

    def verify(self, vocab_size: int, tokenizer_loaded: bool) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a non-negative finite number, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 1:
            raise ValueError(f"top_k must be -1 (disable) or at least 1, got {self.top_k}.")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise ValueError(f"repetition_penalty must be in (0, 2] (1.0 = no penalty), got {self.repetition_penalty}.")
        if self.min_new_tokens > 0 and not tokenizer_loaded:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} is unavailable when skip_tokenizer_init=True")
        for token_id in self.stop_token_ids or ():
            if not 0 <= token_id < vocab_size:
                raise ValueError(f"stop token id {token_id} out of range")


@dataclasses.dataclass
class _Req:
    """What a custom logit processor finds under ``__req__``."""

    origin_input_ids: list[int]
    output_ids: list[int]


class TokenizerManager:
    def __init__(self):
        self.rid_to_state: dict[str, dict[str, Any]] = {}

    def abort_request(self, rid: str = "", abort_all: bool = False):
        if not abort_all and rid not in self.rid_to_state:
            return
        for key, state in self.rid_to_state.items():
            if abort_all or key == rid:
                state["aborted"] = True


class Engine:
    def __init__(self, **kwargs):
        self.server_args = ServerArgs(**kwargs)
        self.decoder = TinyDecoder(self.server_args.model_path)
        self.tokenizer_manager = TokenizerManager()
        self._closed = False

    async def async_generate(
        self,
        prompt: Optional[Union[list[str], str]] = None,
        sampling_params: Optional[dict] = None,
        input_ids: Optional[list[int]] = None,
        custom_logit_processor: Optional[str] = None,
        stream: bool = False,
        rid: Optional[str] = None,
    ) -> Union[dict, AsyncIterator[dict]]:
        if prompt is not None:
            raise ValueError("the stand-in engine runs with skip_tokenizer_init: pass input_ids")
        params = SamplingParams(**(sampling_params or {}))
        params.verify(self.decoder.vocab_size, tokenizer_loaded=not self.server_args.skip_tokenizer_init)
        if custom_logit_processor is not None and not self.server_args.enable_custom_logit_processor:
            raise ValueError("The server is not configured to enable custom logit processor.")
        processor = CustomLogitProcessor.from_str(custom_logit_processor) if custom_logit_processor else None
        generator = self._generate(list(input_ids), params, processor, rid or f"rid-{id(params)}", stream)
        if stream:
            return generator
        return await generator.__anext__()

    async def _generate(self, input_ids, params: SamplingParams, processor, rid: str, stream: bool):
        if self._closed:
            raise RuntimeError("engine is shut down")
        state = {"aborted": False}
        self.tokenizer_manager.rid_to_state[rid] = state
        generator = torch.Generator()
        if params.sampling_seed is not None:
            generator.manual_seed(params.sampling_seed)
        else:
            generator.seed()
        output: list[int] = []
        req = _Req(origin_input_ids=input_ids, output_ids=output)
        stop_ids = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            stop_ids |= self.decoder.eos_ids

        def choose(logits, seen):
            logits = repetition_penalty(logits, seen, params.repetition_penalty)
            if processor is not None:
                logits = processor(logits[None, :], [dict(params.custom_params or {}, __req__=req)])[0]
            return sample(
                logits, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, generator=generator
            )

        tokens = self.decoder.decode(input_ids, choose)
        limit = min(params.max_new_tokens, (self.server_args.context_length or 1 << 30) - len(input_ids))
        reason = None
        try:
            while reason is None:
                token = await asyncio.to_thread(next, tokens)
                if state["aborted"]:
                    reason = {"type": "abort", "message": "Abort in waiting queue"}
                    break
                output.append(token)
                if token in stop_ids:
                    reason = {"type": "stop", "matched": token}
                elif len(output) >= limit:
                    reason = {"type": "length", "length": len(output)}
                if stream and reason is None:
                    yield {"output_ids": output, "meta_info": self._meta(rid, None, input_ids, output)}
            yield {"output_ids": output.copy(), "meta_info": self._meta(rid, reason, input_ids, output)}
        finally:
            self.tokenizer_manager.rid_to_state.pop(rid, None)

    @staticmethod
    def _meta(rid, reason, input_ids, output) -> dict[str, Any]:
        return {"id": rid, "finish_reason": reason, "prompt_tokens": len(input_ids), "completion_tokens": len(output)}

    def shutdown(self):
        self._closed = True
