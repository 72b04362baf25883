"""The MegaTTS3 engine: voice cloning from a reference wav plus its latent, streamed segment by segment.

Per request (upstream tts/infer_cli.py, ``MegaTTS3DiTInfer``):

- reference (once, kept with a role): the wav at 24 kHz, padded as upstream, goes through the aligner
  (phones, tones, frame → phone map); the client's latent is validated and cut to the aligned length;
  the reference loudness is measured; the duration model reads the reference as its prompt;
- text: language, normalisation and splitting (``frontend``), then for each segment
  G2P on the LLM backend → duration model → DiT (flow matching with classifier-free guidance) →
  WaveVAE decode → the prompt part trimmed → loudness matched to the reference;
- segments joined with a 0.16 s crossfade (upstream's ``combine_audio_segments`` length).

Word timings (``request.word_timings``, when the caller asks): from the phone durations the DiT is
given, so exact in time; which phones are a word's is found by running each word through the G2P on
its own (``word_timing`` has the rule). A segment's words are offset by where its audio begins in the
request's audio (its start in the crossfade with the segment before).

Beyond upstream: every segment goes out as soon as it is decoded, while the next segment's G2P and
duration run during the current one's DiT; concurrent requests' DiT calls share one batched
forward per step (``DynamicBatcher``); ``speed`` scales the predicted durations; a segment's length
is bounded by its text (a random model cannot turn "Hi." into a minute), scaled by
``--speaking_rate_bound`` (``max_tokens`` caps the G2P's phones, not the audio).
A non-stream response is the same iterator drained, so it is the same audio for the same seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

import numpy as np
import torch
from flashtts_core.audio_io import audible_reference, mono_reference
from flashtts_core.backend import BackendConfig
from flashtts_core.batcher import DynamicBatcher
from flashtts_core.crossfade import StreamJoiner
from flashtts_core.engine import BackendFactory
from flashtts_core.errors import InvalidRequest, ModelLoadError
from flashtts_core.options import EngineOptions, resolve_device
from flashtts_core.request import Level, SynthesisRequest, VoiceReference, WordTiming
from flashtts_core.speaking_rate import BoundReport, max_speech_seconds
from flashtts_core.text import text_units

from . import phones
from .alignment import ReferenceAlignment, length_regulate
from .base import MegaEngineBase
from .frontend import prepare_text
from .g2p import G2P
from .layout import SAMPLE_RATE, SUBFOLDERS
from .options import MegaOptions
from .precision import choose_precision
from .reference import check_latent
from .word_timing import WordFrames, phone_durations, word_frames

logger = logging.getLogger("flashtts.mega")

MEL_FRAMES_PER_SECOND = 100  # mel2ph frames: 10 ms
FRAMES_MULTIPLE = 8  # upstream's frames_multiple: durations padded to a multiple of it
CROSSFADE_SECONDS = 0.16  # upstream combine_audio_segments
DUR_DISTURB = 0.1  # upstream forward()'s default
PROMPT_CACHE_SIZE = 64
WORD_PHONES_CACHE_SIZE = 4096  # words' own phone counts (word timings' word ↔ phone mapping)

# speed → the duration model's length scale (upstream's dur_alpha: predicted durations are
# multiplied by it, so > 1 is slower). Upstream exposes dur_alpha only in code; FlashTTS maps the
# five speed levels onto it. OpenAI's float speed reaches it through Level.from_ratio.
SPEED_TO_DUR_ALPHA = {
    Level.very_low: 1.5,
    Level.low: 1.25,
    Level.moderate: 1.0,
    Level.high: 0.8,
    Level.very_high: 0.65,
}


def _derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass
class Voice:
    """A reference ready for synthesis (never mutated: requests share it)."""

    alignment: ReferenceAlignment
    latent: torch.Tensor  # [1, T_ref, 32] float32, cut to the aligned length
    loudness: float  # LUFS of the padded reference (-inf when too short to measure)
    prompt: object  # duration.DurationPrompt


@dataclass
class DecodeItem:
    latent: torch.Tensor  # [T, 32], the reference part included
    reference: torch.Tensor  # [T_ref, 32]: the voice's own latent
    loudness: float


class MegaPipeline(MegaEngineBase):
    """The loaded MegaTTS3 model: aligner, duration model, DiT and WaveVAE here, G2P on the backend."""

    def __init__(self, backend, g2p: G2P, aligner, duration, dit, wavvae, win_size: int, options: EngineOptions):
        self.backend = backend
        self.g2p = g2p
        self.aligner = aligner
        self.duration = duration
        self.dit = dit
        self.wavvae = wavvae
        self.win_size = win_size
        # On a CPU every module runs on the G2P backend's decode thread when it lends one
        # (--cpu_compute_thread shared): one OpenMP team drives the cores (flashtts_backends.scheduled_stream).
        shared = backend.executor_for(resolve_device(options.detokenizer_device))
        self._dit = DynamicBatcher(
            self._run_dit,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="mega-dit",
            executor=shared,
        )
        self._decode = DynamicBatcher(
            self._run_decode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="mega-decode",
            executor=shared,
        )
        # Otherwise the duration model (small, sequential) has a thread beside the DiT's, and the aligner
        # its own, so that aligning a new reference (seconds) never holds up running requests' segments.
        self._own_executors = (
            []
            if shared is not None
            else [
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="flashtts-mega-prep"),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="flashtts-mega-align"),
            ]
        )
        self._prep: Executor = shared if shared is not None else self._own_executors[0]
        self._align: Executor = shared if shared is not None else self._own_executors[1]
        self._prompts: OrderedDict[bytes, object] = OrderedDict()
        self._prompt_locks: dict[bytes, asyncio.Lock] = {}
        self._word_phones: OrderedDict[str, int] = OrderedDict()

    @classmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> "MegaPipeline":
        from .aligner import Aligner
        from .checkpoint import read_config
        from .config import DiTConfig
        from .dit import DiT
        from .duration import DurationModel
        from .wavvae import WaveVAEDecoder
        from .wavvae_packed import pack_wavvae

        model_path = Path(options.model_path)
        missing = [sub for sub in SUBFOLDERS if not (model_path / sub).is_dir()]
        if missing:
            raise ModelLoadError(f"{model_path} is not a MegaTTS3 model: {', '.join(missing)} missing")
        aligner_device = resolve_device(options.tokenizer_device)
        device = resolve_device(options.detokenizer_device)
        # The DiT runs in the chosen precision (upstream: float16 autocast on a GPU; ``auto`` on a CPU
        # is bfloat16 where the CPU has it natively, see ``precision``); the small models stay in float32.
        precision = choose_precision(options.torch_dtype, device)
        start = time.perf_counter()
        logger.info(
            "MegaTTS3 from %s: aligner on %s, duration/DiT/WaveVAE on %s; DiT in %s, WaveVAE in %s (%s)",
            model_path,
            aligner_device,
            device,
            precision.dit,
            precision.wavvae,
            precision.reason,
        )

        layout = MegaOptions.of(options).wavvae_decoder

        def load_wavvae():
            wavvae = WaveVAEDecoder.from_checkpoint(model_path / "wavvae", device, precision.wavvae)
            if (layout == "packed" or (layout == "auto" and device == "cpu")) and pack_wavvae(wavvae):
                logger.info("WaveVAE decoder packed for the CPU (channels-last, polyphase upsampling)")
            return wavvae

        def load_modules():
            # the reference's padding: a setting of the DiT folder's config.yaml (upstream's global hyperparameters)
            win_size = DiTConfig.from_dict(read_config(model_path / "diffusion_transformer")).win_size
            return (
                Aligner.from_checkpoint(model_path / "aligner_lm", aligner_device),
                DurationModel.from_checkpoint(model_path / "duration_lm", device),
                DiT.from_checkpoint(model_path / "diffusion_transformer", device, precision.dit),
                load_wavvae(),
                win_size,
            )

        tokenizer_task = asyncio.ensure_future(asyncio.to_thread(G2P.load_tokenizer, model_path / "g2p"))

        async def load_g2p_llm():
            # The backend is told which ids the G2P emits (llama-cpp cuts its output head to them).
            try:
                output_ids = G2P.output_token_ids(await asyncio.shield(tokenizer_task))
            except Exception:
                output_ids = None  # the tokenizer's own failure is reported by its task
            return await create_backend(BackendConfig.from_options(options, model_path / "g2p", output_ids))

        results = await asyncio.gather(
            asyncio.to_thread(load_modules), tokenizer_task, load_g2p_llm(), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            if not isinstance(results[2], BaseException):
                await results[2].close()  # a backend (e.g. vLLM's engine process) must not outlive a failed load
            raise failed[0]
        (aligner, duration, dit, wavvae, win_size), tokenizer, backend = results
        try:
            g2p = G2P(tokenizer, backend)
        except BaseException:
            await backend.close()
            raise
        engine = cls(backend, g2p, aligner, duration, dit, wavvae, win_size, options)
        logger.info(
            "MegaTTS3 ready in %.1f s (DiT batches of up to %d, wait %.3f s; references up to %.0f s)",
            time.perf_counter() - start,
            options.batch_size,
            options.wait_timeout,
            aligner.max_reference_seconds,
        )
        return engine

    async def close(self) -> None:
        self._dit.close()
        self._decode.close()
        for executor in self._own_executors:
            executor.shutdown(wait=False, cancel_futures=True)
        await self.backend.close()

    def info(self) -> dict:
        return {**super().info(), "dit_batches": self._dit.batches_run, "dit_largest_batch": self._dit.largest_batch}

    async def _in_prep(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._prep, fn, *args)

    # -- references -------------------------------------------------------------------------------
    async def prepare_reference(self, reference: VoiceReference) -> VoiceReference:
        """Align the reference once: ``features`` get ``ph``, ``tone``, ``mel2ph`` (int64) and
        ``loudness`` (float64 [1]); the latent is checked against the alignment. Roles keep both."""
        who = reference.name or ""
        check_latent(reference.latent, who=who)  # a wrong latent is refused before the aligner runs
        audio = self._check_reference_audio(reference)
        padded = self._padded(audio)
        alignment = await asyncio.get_running_loop().run_in_executor(self._align, self.aligner.align, padded)
        check_latent(reference.latent, alignment.latent_frames, who=who)
        loudness = await asyncio.to_thread(_loudness, padded)
        features = {**alignment.to_arrays(), "loudness": np.array([loudness], dtype=np.float64)}
        return replace(reference, audio=audio, sample_rate=self.sample_rate, features=features)

    def _padded(self, audio: np.ndarray) -> np.ndarray:
        from .aligner import pad_reference

        return pad_reference(audio, self.win_size)

    def _check_reference_audio(self, reference: VoiceReference) -> np.ndarray:
        audio = mono_reference(reference.audio, reference.sample_rate)
        return audible_reference(audio, reference.sample_rate, self.sample_rate)

    async def _voice(self, reference: VoiceReference) -> Voice:
        try:
            alignment = ReferenceAlignment.from_arrays(reference.features)
            loudness = float(np.asarray(reference.features["loudness"]).reshape(-1)[0])
        except (KeyError, IndexError, ValueError, TypeError):
            reference = await self.prepare_reference(reference)  # no (or damaged) cached alignment
            alignment = ReferenceAlignment.from_arrays(reference.features)
            loudness = float(reference.features["loudness"][0])
        latent = check_latent(reference.latent, alignment.latent_frames, who=reference.name or "")
        prompt = await self._duration_prompt(alignment)
        return Voice(alignment, torch.from_numpy(latent), loudness, prompt)

    async def _duration_prompt(self, alignment) -> object:
        """The duration model's state after reading the reference, computed once per alignment."""
        key = hashlib.blake2b(
            b"".join(np.ascontiguousarray(a).tobytes() for a in alignment.to_arrays().values()), digest_size=16
        ).digest()
        cached = self._prompts.get(key)
        if cached is not None:
            self._prompts.move_to_end(key)
            return cached
        lock = self._prompt_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._prompts.get(key)
            if cached is None:
                cached = await self._in_prep(self.duration.prompt, alignment)
                self._prompts[key] = cached
                while len(self._prompts) > PROMPT_CACHE_SIZE:
                    self._prompts.popitem(last=False)
        self._prompt_locks.pop(key, None)
        return cached

    # -- synthesis --------------------------------------------------------------------------------
    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        """Float32 24 kHz chunks, one per text segment (its crossfade tail held for the next)."""
        self.check_request(request)
        if request.reference is None:
            raise InvalidRequest(
                "MegaTTS3 has no built-in voices: clone one (reference audio + latent_file) or name a saved role",
                param="voice",
            )
        lang, segments = await asyncio.to_thread(prepare_text, request.text)
        if not segments:
            raise InvalidRequest("text has nothing to speak", param="text")
        voice = await self._voice(request.reference)
        seed = request.sampling.seed if request.sampling.seed is not None else secrets.randbits(62)
        alpha = SPEED_TO_DUR_ALPHA[request.speed] if request.speed is not None else 1.0
        max_tokens = request.sampling.max_tokens
        bound = (request.speaking_rate_bound, request.bound_report)
        diffusion = MegaOptions.of(None, request)
        logger.debug("request %s: %s, %d segment(s), seed %d", request.request_id, lang, len(segments), seed)

        # Seconds each stage took for this request (waits in the batchers included), logged at the end.
        times = dict.fromkeys(("g2p", "duration", "dit", "decode"), 0.0)
        started = time.perf_counter()
        samples = 0

        timings = request.word_timings

        def prepare(i: int) -> asyncio.Task:
            return asyncio.ensure_future(
                self._prepare_segment(
                    voice, segments[i], i, len(segments), seed, alpha, max_tokens, bound, diffusion, times,
                    timings is not None,
                )
            )  # fmt: skip

        joiner = StreamJoiner(int(CROSSFADE_SECONDS * self.sample_rate))
        pending = [prepare(0)]
        try:
            for i in range(len(segments)):
                dit_input, words = await pending[i]
                if i + 1 < len(segments):
                    pending.append(prepare(i + 1))  # G2P + duration of the next segment run during this DiT
                audio = await self._segment_audio(voice, dit_input, times)
                if timings is not None:
                    # What is out so far ends where this segment begins (its head crossfades with the held tail).
                    offset = samples / self.sample_rate
                    timings.extend(
                        WordTiming(w.word, offset + w.start / MEL_FRAMES_PER_SECOND,
                                   offset + w.end / MEL_FRAMES_PER_SECOND, w.exact)
                        for w in words
                    )  # fmt: skip
                out = joiner.push(audio)
                samples += out.size
                if out.size:
                    yield out
            tail = joiner.flush()
            samples += tail.size
            if tail.size:
                yield tail
            logger.info(
                "request %s: %d segment(s), %.2f s of audio in %.2f s; G2P %.2f s, durations %.2f s, "
                "DiT %.2f s, decode %.2f s",
                request.request_id, len(segments), samples / self.sample_rate, time.perf_counter() - started,
                times["g2p"], times["duration"], times["dit"], times["decode"],
            )  # fmt: skip
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _prepare_segment(
        self,
        voice: Voice,
        text: str,
        index: int,
        count: int,
        seed: int,
        alpha: float,
        max_tokens: Optional[int],
        bound: tuple[float, Optional[BoundReport]],
        diffusion: MegaOptions,
        times: dict[str, float],
        want_words: bool = False,
    ) -> tuple[object, list[WordFrames]]:
        """The segment's DiT input, and its words' frames when ``want_words``."""
        from .dit import DiTInput

        start = time.perf_counter()
        words = text_units(text) if want_words else []
        # Each word's own phone count (for the word ↔ phone mapping only) beside the segment's G2P.
        unique = list(dict.fromkeys(words))
        (ph, tone), *counts = await asyncio.gather(
            self.g2p.run(text, max_tokens), *(self._phone_count(word) for word in unique)
        )
        count_of = dict(zip(unique, counts))
        times["g2p"] += time.perf_counter() - start
        start = time.perf_counter()
        mel2ph = await self._in_prep(
            self._predict_durations, voice, ph, tone, index, count, alpha, _derive_seed(seed, "duration", index)
        )
        times["duration"] += time.perf_counter() - start
        scale, report = bound
        if scale > 0:
            mel2ph, cut = _cap_frames(mel2ph, max_speech_seconds(text) * scale * MEL_FRAMES_PER_SECOND)
            if cut and report is not None:
                report.note_cut(mel2ph.size(1) / MEL_FRAMES_PER_SECOND)
        inputs = build_dit_inputs(voice.alignment, voice.latent, ph, tone, mel2ph)
        frames = word_frames(words, [count_of[w] for w in words], phone_durations(mel2ph, ph.size(1))) if words else []
        return DiTInput(
            **inputs,
            generator=_generator(_derive_seed(seed, "dit", index)),
            time_step=diffusion.time_step,
            p_w=diffusion.p_w,
            t_w=diffusion.t_w,
        ), frames

    async def _phone_count(self, word: str) -> int:
        """How many phones the G2P gives ``word`` on its own (greedy, so the same every time: cached)."""
        count = self._word_phones.get(word)
        if count is not None:
            self._word_phones.move_to_end(word)
            return count
        ph, _ = await self.g2p.run(word)
        count = ph.size(1) - 1  # less the leading sil
        self._word_phones[word] = count
        while len(self._word_phones) > WORD_PHONES_CACHE_SIZE:
            self._word_phones.popitem(last=False)
        return count

    def _predict_durations(self, voice: Voice, ph, tone, index: int, count: int, alpha: float, seed: int):
        return self.duration.predict(
            voice.prompt,
            ph,
            tone,
            is_first=index == 0,
            is_final=index == count - 1,
            dur_disturb=DUR_DISTURB,
            dur_alpha=alpha,
            generator=_generator(seed),
        )

    async def _segment_audio(self, voice: Voice, dit_input, times: dict[str, float]) -> np.ndarray:
        start = time.perf_counter()
        latent = await self._dit.submit(dit_input)
        times["dit"] += time.perf_counter() - start
        start = time.perf_counter()
        audio = await self._decode.submit(DecodeItem(latent, voice.latent[0], voice.loudness))
        times["decode"] += time.perf_counter() - start
        return audio

    def _run_dit(self, batch: Sequence) -> list[torch.Tensor]:
        if len(batch) > 1:
            logger.info("mega DiT: %d requests in one batch", len(batch))
        return self.dit.sample(list(batch), time_step=self.time_step, p_w=self.p_w, t_w=self.t_w)

    def _run_decode(self, batch: Sequence[DecodeItem]) -> list[np.ndarray]:
        # One by one: the decoder is convolutional, and a padded batch would change each item's end.
        return [self._decode_one(item) for item in batch]

    @torch.inference_mode()
    def _decode_one(self, item: DecodeItem) -> np.ndarray:
        latent = item.latent.detach().float().cpu().clone()
        # The DiT never predicts the prompt region (its input there is masked): as upstream, the voice's
        # real latent goes there, since the decoder's first frames past the prompt see it as context.
        frames = item.reference.shape[0]
        latent[:frames] = item.reference.float().cpu()
        # Only the audio past the reference prompt (upstream decodes it all, then cuts the prompt off);
        # the decoder sees a few reference frames as context, which gives the same samples.
        wav = self.wavvae.decode(latent[None], start=frames)[0].reshape(-1).float().cpu().numpy()
        return match_loudness(wav, item.loudness)


def build_dit_inputs(
    alignment, latent: torch.Tensor, ph: torch.Tensor, tone: torch.Tensor, mel2ph: torch.Tensor
) -> dict:
    """Upstream's ``prepare_inputs_for_dit``: reference + segment, as the CFG triple
    (speaker+text, text, unconditional)."""
    ph_ref, tone_ref, mel2ph_ref = alignment.ph, alignment.tone, alignment.mel2ph
    dur = torch.cat([mel2ph_ref, mel2ph + ph_ref.size(1)], dim=1)
    dur = dur[:, : dur.size(1) // FRAMES_MULTIPLE * FRAMES_MULTIPLE].repeat(3, 1)
    phone = torch.cat([ph_ref, ph], dim=1)
    tone = torch.cat([tone_ref, tone], dim=1).clone()
    # Upstream keeps only Chinese tone ids (and padding); every other tone becomes the English 3.
    chinese = (tone == 4) | ((tone >= 11) & (tone <= 15)) | (tone == 0)
    tone[~chinese] = phones.EN_TONE_ID
    phone3 = torch.cat([phone, phone, torch.full_like(phone, phones.CFG_MASK_PHONE)])
    tone3 = torch.cat([tone, tone, torch.full_like(tone, phones.CFG_MASK_TONE)])
    frames = dur.size(1) // 4
    ref_frames = latent.size(1)
    lat = torch.zeros(3, frames, latent.size(2), dtype=torch.float32)
    lat[0, :ref_frames] = latent[0]  # only the speaker+text row sees the reference
    mask = torch.zeros(3, frames, 1, dtype=torch.float32)
    mask[:, :ref_frames] = 1.0
    return {"phone": phone3.long(), "tone": tone3.long(), "lat_ctx": lat * mask, "ctx_mask": mask, "dur": dur.long()}


def _cap_frames(mel2ph: torch.Tensor, max_frames: float) -> tuple[torch.Tensor, bool]:
    """Shrink all durations proportionally so the segment lasts at most ``max_frames`` (10 ms) frames;
    the flag says whether it had to."""
    total = mel2ph.size(1)
    limit = max(FRAMES_MULTIPLE, int(max_frames) // FRAMES_MULTIPLE * FRAMES_MULTIPLE)
    if total <= limit:
        return mel2ph, False
    n = int(mel2ph.max())
    dur = torch.bincount(mel2ph[0].long(), minlength=n + 1)[1:].float()
    dur = torch.floor(dur * (limit / total)).long()
    dur[-1] += limit - int(dur.sum())
    logger.info("a segment's durations ran to %.1f s; cut to %.1f s (its text's bound)", total / 100, limit / 100)
    return length_regulate(dur[None]), True


def _loudness(wav: np.ndarray) -> float:
    import pyloudnorm as pyln

    try:
        return float(pyln.Meter(SAMPLE_RATE).integrated_loudness(wav.astype(np.float64)))
    except ValueError:  # shorter than one 0.4 s block
        return float("-inf")


def match_loudness(wav: np.ndarray, target: float) -> np.ndarray:
    """Upstream's post-processing: the segment at the reference's loudness, peaks kept below 1."""
    wav = np.asarray(wav, dtype=np.float64)
    current = _loudness(wav)
    if math.isfinite(current) and math.isfinite(target):
        wav = wav * (10.0 ** ((target - current) / 20.0))
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak >= 1.0:
        wav = wav / peak * 0.95
    return wav.astype(np.float32)


def probe_input(latent: torch.Tensor, seconds: float, seed: int, phones_per_second: float = 12.0):
    """A fixed DiT input for precision measurements: the reference latent [1, T, 32] with random phones
    spread evenly over it, then ``seconds`` of random phones (English tone), every phone of even length."""
    from .alignment import LATENT_STRIDE, ReferenceAlignment, length_regulate
    from .dit import DiTInput
    from .phones import CFG_MASK_PHONE, EN_TONE_ID

    gen = torch.Generator().manual_seed(seed)

    def phones(frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = max(1, round(frames / 100 * phones_per_second))
        dur = torch.full((1, n), frames // n)
        dur[0, -1] += frames - int(dur.sum())
        ph = torch.randint(1, CFG_MASK_PHONE, (1, n), generator=gen)
        return ph, torch.full_like(ph, EN_TONE_ID), length_regulate(dur)

    ph_ref, tone_ref, mel2ph_ref = phones(latent.shape[1] * LATENT_STRIDE)
    ph, tone, mel2ph = phones(max(FRAMES_MULTIPLE, int(seconds * 100) // FRAMES_MULTIPLE * FRAMES_MULTIPLE))
    alignment = ReferenceAlignment(ph_ref, tone_ref, mel2ph_ref)
    return DiTInput(**build_dit_inputs(alignment, latent, ph, tone, mel2ph))
