"""Spark's control mode: the built-in voices female/male with pitch and speed labels, generated in
phases before any speech.

The model's own control-mode output, one piece at a time, each phase limited to its legal token ids
(``allowed_token_ids``) so the output is well-formed by construction: ``<|start_acoustic_token|>``
(forced), one pitch value, one speed value, ``<|end_acoustic_token|><|start_global_token|>`` (forced),
32 global tokens, ``<|end_global_token|><|start_semantic_token|>`` (forced). The voice (pitch value,
speed value, global tokens) is sampled once per request and shared by all its segments, whose
semantic phase then runs as for cloning. With ``--fix_voice`` the pitch value and global tokens of
each gender and pitch level are sampled once and kept (``fixed_voices``); only the speed value is
sampled per request.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from flashtts_core.request import Level
from flashtts_core.sampling import SamplingParams

from .fixed_voices import FixedVoice, FixedVoiceStore
from .vocabulary import GENDERS, GLOBAL_TOKENS_PER_VOICE, SparkVocabulary


@dataclass(frozen=True)
class ControlVoice:
    """What the model samples in control mode before it speaks."""

    pitch_value: int
    speed_value: int
    global_tokens: tuple[int, ...]


def derive_seed(seed: Optional[int], *parts: object) -> Optional[int]:
    """A distinct, reproducible seed per phase and segment of one request (None stays None)."""
    if seed is None:
        return None
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ControlVoicePhases:
    """Samples (or, with a fixed-voice store, reuses) a built-in voice and builds its segments' prompts."""

    def __init__(self, backend, vocabulary: SparkVocabulary, fixed_voices: Optional[FixedVoiceStore] = None):
        self.backend = backend
        self.vocab = vocabulary
        self.fixed_voices = fixed_voices
        self._fixed_voice_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def prompts(
        self, segments: Sequence[str], gender: str, pitch: int, speed: int, params: SamplingParams
    ) -> tuple[list[list[int]], tuple[int, ...]]:
        """Each segment's prompt up to ``<|start_semantic_token|>``, and the voice's global tokens."""
        heads = [self.vocab.control_prompt(s, GENDERS[gender], pitch, speed) for s in segments]
        voice = await self.voice(heads[0], params, gender, pitch)
        suffix = self.vocab.control_voice_suffix(voice.pitch_value, voice.speed_value, voice.global_tokens)
        return [head + suffix for head in heads], voice.global_tokens

    async def voice(self, prompt: list[int], params: SamplingParams, gender: str, pitch: int) -> ControlVoice:
        """Sample (or, with fixed voices, reuse) the pitch value, speed value and 32 global tokens."""
        if self.fixed_voices is None:
            return await self._sample_voice(prompt, params)
        pitch_name = list(Level)[pitch].value
        fixed = self.fixed_voices.get(gender, pitch_name)
        if fixed is None:
            lock = self._fixed_voice_locks.setdefault((gender, pitch_name), asyncio.Lock())
            async with lock:  # concurrent first requests must agree on one voice
                fixed = await asyncio.to_thread(self.fixed_voices.get, gender, pitch_name)
                if fixed is None:
                    voice = await self._sample_voice(prompt, params)
                    fixed = await asyncio.to_thread(
                        self.fixed_voices.put, FixedVoice(gender, pitch_name, voice.pitch_value, voice.global_tokens)
                    )
                    if fixed.global_tokens == voice.global_tokens:
                        return voice
        speed_value = await self._sample_speed(prompt, params, fixed.pitch_value)
        return ControlVoice(fixed.pitch_value, speed_value, fixed.global_tokens)

    async def _sample_voice(self, prompt: list[int], params: SamplingParams) -> ControlVoice:
        vocab = self.vocab
        pitch_value = await self._sample_one(
            prompt, params, vocab.pitch_value_phase_ids, vocab.pitch_values, "pitch_value"
        )
        speed_value = await self._sample_speed(prompt, params, pitch_value)
        global_tokens = await self._sample_globals(prompt, params, pitch_value, speed_value)
        return ControlVoice(pitch_value, speed_value, global_tokens)

    async def _sample_speed(self, prompt: list[int], params: SamplingParams, pitch_value: int) -> int:
        vocab = self.vocab
        head = prompt + [vocab.pitch_values.id(pitch_value)]
        return await self._sample_one(head, params, vocab.speed_value_phase_ids, vocab.speed_values, "speed_value")

    async def _sample_one(
        self, prompt: list[int], params: SamplingParams, allowed: tuple[int, ...], family, phase: str
    ) -> int:
        phase_params = params.with_overrides(
            max_tokens=1,
            allowed_token_ids=allowed,
            stop_token_ids=(),
            min_tokens=0,
            seed=derive_seed(params.seed, phase),
        )
        out = await self.backend.generate(prompt, phase_params)
        code = family.code(out.token_ids[0]) if out.token_ids else None
        if code is None:
            raise RuntimeError(f"the LLM backend ignored allowed_token_ids in the {phase} phase: {out.token_ids[:4]}")
        return code

    async def _sample_globals(
        self, prompt: list[int], params: SamplingParams, pitch_value: int, speed_value: int
    ) -> tuple[int, ...]:
        vocab = self.vocab
        head = prompt + [
            vocab.pitch_values.id(pitch_value),
            vocab.speed_values.id(speed_value),
            vocab.end_acoustic,
            vocab.start_global,
        ]
        phase_params = params.with_overrides(
            max_tokens=GLOBAL_TOKENS_PER_VOICE,
            allowed_token_ids=vocab.global_phase_ids,
            stop_token_ids=(),
            min_tokens=0,
            seed=derive_seed(params.seed, "global"),
        )
        out = await self.backend.generate(head, phase_params)
        codes = vocab.global_codes(out.token_ids)
        if len(codes) != GLOBAL_TOKENS_PER_VOICE:
            raise RuntimeError(f"the LLM produced {len(codes)} global tokens instead of {GLOBAL_TOKENS_PER_VOICE}")
        return tuple(codes)
