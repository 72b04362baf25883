"""Stand-in of TensorRT-LLM's LLM API (see ../README.md): ``LLM``, ``SamplingParams`` and the
streamed ``generate_async`` request, backed by a real tiny model through transformers."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Union

import torch
from standin_decoder import TinyDecoder, repetition_penalty, sample

from .llmapi import KvCacheConfig


@dataclass(slots=True, kw_only=True)
class SamplingParams:
    """The documented fields the adapter uses, with TensorRT-LLM's names and defaults."""

    end_id: Optional[int] = None
    pad_id: Optional[int] = None
    max_tokens: int = 32
    stop_token_ids: Optional[list[int]] = None
    logits_processor: Optional[object] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    temperature: Optional[float] = None
    min_tokens: Optional[int] = None
    repetition_penalty: Optional[float] = None
    ignore_eos: bool = False
    detokenize: bool = True

    def __post_init__(self):
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError("temperature must be > 0; use top_k=1 for greedy decoding")


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    finish_reason: Optional[str] = None
    _last: int = 0

    @property
    def token_ids_diff(self) -> list[int]:
        """The ids added since the previous streamed step."""
        return self.token_ids[self._last :]


class RequestOutput:
    """A request in flight: async-iterable while it streams; ``abort()`` cancels it."""

    def __init__(self, steps, streaming: bool):
        self._steps = steps
        self._streaming = streaming
        self.outputs = [CompletionOutput(index=0, token_ids=[])]
        self.finished = False
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        async for _ in self._run(stream=True):
            yield self

    async def aresult(self) -> "RequestOutput":
        async for _ in self._run(stream=False):
            pass
        return self

    async def _run(self, stream: bool):
        completion = self.outputs[0]
        async for token, reason in self._steps(lambda: self._aborted):
            completion._last = len(completion.token_ids)
            if token is not None:
                completion.token_ids.append(token)
            if reason is not None:
                completion.finish_reason = reason
                self.finished = True
            if stream or self.finished:
                yield
            if self.finished:
                return


class LLM:
    def __init__(
        self,
        model: Union[str, Path],
        *,
        skip_tokenizer_init: bool = False,
        tensor_parallel_size: int = 1,
        kv_cache_config: Optional[KvCacheConfig] = None,
    ):
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be at least 1, got {tensor_parallel_size}")
        # The real LLM keeps its parsed arguments (TorchLlmArgs) here.
        self.args = SimpleNamespace(model=str(model), tensor_parallel_size=tensor_parallel_size)
        if not (Path(model) / "config.json").is_file():
            raise ValueError(f"{model} is neither a TensorRT engine directory nor a Hugging Face checkpoint")
        self.decoder = TinyDecoder(str(model))
        self.skip_tokenizer_init = skip_tokenizer_init
        self._ids = itertools.count()
        self._closed = False

    def generate_async(
        self, inputs: Union[list[int], str], sampling_params: Optional[SamplingParams] = None, streaming: bool = False
    ) -> RequestOutput:
        if self._closed:
            raise RuntimeError("LLM is shut down")
        if isinstance(inputs, str):
            raise ValueError("the stand-in runs with skip_tokenizer_init: pass token ids")
        params = sampling_params or SamplingParams()
        if params.detokenize and self.skip_tokenizer_init:
            raise ValueError("detokenize needs a tokenizer; pass detokenize=False with skip_tokenizer_init")
        if params.end_id is None and self.skip_tokenizer_init:
            raise ValueError("end_id must be given when the tokenizer is skipped")
        return RequestOutput(self._steps_for(list(inputs), params, next(self._ids)), streaming)

    def _steps_for(self, prompt: list[int], params: SamplingParams, req_id: int):
        decoder = self.decoder

        async def steps(aborted):
            generator = torch.Generator().manual_seed(params.seed or 0)  # C++ runtime default seed 0
            processors = params.logits_processor
            processors = processors if isinstance(processors, list) else [processors] if processors else []
            stop_ids = set(params.stop_token_ids or ())
            if params.end_id is not None and params.end_id >= 0 and not params.ignore_eos:
                stop_ids.add(params.end_id)
            min_tokens = params.min_tokens or 0
            produced = []

            def choose(logits, seen):
                logits = repetition_penalty(logits, seen, params.repetition_penalty or 1.0)
                if len(produced) < min_tokens and stop_ids:
                    logits[sorted(stop_ids)] = float("-inf")
                beam = logits[None, :]
                for processor in processors:
                    processor(req_id, beam, [list(seen)], None, None)  # in place, as documented
                return sample(
                    beam[0],
                    temperature=params.temperature or 1.0,
                    top_k=params.top_k or 0,
                    top_p=params.top_p or 0.0,
                    generator=generator,
                )

            tokens = decoder.decode(prompt, choose)
            while True:
                token = await asyncio.to_thread(next, tokens)
                if aborted():
                    yield None, "cancelled"
                    return
                produced.append(token)
                if token in stop_ids:
                    yield None, "stop"  # stop ids are not part of the output
                    return
                yield token, "length" if len(produced) >= params.max_tokens else None

        return steps

    def shutdown(self) -> None:
        self._closed = True
