"""MegaTTS3's aligner: a small Whisper-like encoder-decoder that reads a reference recording and writes
its phones with their end frames.

Upstream: ``tts/modules/aligner/whisper_small.py`` (the network), ``align()`` in
``tts/frontend_function.py`` (decoding and duration fix-ups), ``preprocess()`` in ``tts/infer_cli.py``
(padding of the reference). The decoder emits ``BOS, phone, end-frame, phone, end-frame, …, EOS``
(token spaces in ``phones.py``); end frames are 10 ms frames of a Whisper-style 16 kHz log-mel.

Where upstream runs a free greedy loop that re-encodes the whole prefix every step, we decode with a
KV cache and mask the logits to the tokens that are legal at each position (a phone or the end token
at even positions, a strictly later frame within the audio at odd ones). A trained model's argmax is
legal anyway; a random tiny model still yields a well-formed alignment. At most 768 tokens, as upstream.

Reference padding, which the *engine* must apply before ``align`` (and before measuring loudness and
slicing the latent): ``pad_reference(wav_24k, win_size)`` with ``win_size`` from
``diffusion_transformer/config.yaml``; the latent is then cut to ``alignment.latent_frames`` frames.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from flashtts_core.audio_io import resample
from flashtts_core.dsp import slaney_mel_filterbank
from flashtts_core.errors import AudioDecodeError
from torch import nn

from . import phones
from .alignment import ReferenceAlignment, length_regulate
from .checkpoint import (
    build_checked,
    load_strict,
    million_parameters,
    ready_for_inference,
)
from .config import AlignerConfig
from .layout import SAMPLE_RATE

logger = logging.getLogger("flashtts.mega")

CHECKPOINT, INNER_KEY = AlignerConfig.CHECKPOINT, AlignerConfig.INNER_KEY  # upstream's file and key names

MEL_SAMPLE_RATE = 16000  # the aligner resamples the engine's 24 kHz itself
N_FFT = 400
HOP_LENGTH = 160  # 10 ms frames
FRAMES_MULTIPLE = 8  # upstream's frames_multiple: reference frames are cut to a multiple of it
MAX_DECODE_STEPS = 768
REFERENCE_TAIL = 12000  # samples of silence appended to the reference (0.5 s at 24 kHz)


def pad_reference(wav: np.ndarray, win_size: int) -> np.ndarray:
    """Upstream's reference padding (``preprocess``): up to one sample short of a multiple of
    ``win_size``, then 0.5 s of silence. float32 in, float32 out."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    rest = len(wav) % win_size
    if rest < win_size - 1:
        wav = np.pad(wav, (0, win_size - 1 - rest))
    return np.pad(wav, (0, REFERENCE_TAIL)).astype(np.float32)


def mel_filters(n_mels: int = 80, sr: int = MEL_SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank [n_mels, n_fft // 2 + 1], 0 Hz to sr / 2 (Whisper's, librosa's)."""
    return np.ascontiguousarray(slaney_mel_filterbank(n_fft // 2 + 1, 0.0, sr / 2, n_mels, sr).T)


def log_mel_spectrogram(audio_16k: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel recipe: |STFT|² (n_fft 400, hop 160, Hann), mel, log10, floor at max − 8,
    (x + 4) / 4. Returns [n_mels, len // 160] float32."""
    audio = torch.as_tensor(np.asarray(audio_16k, dtype=np.float32)).reshape(-1)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional embedding of the audio encoder: [length, channels] (sin | cos)."""
    inv = torch.exp(-math.log(max_timescale) / (channels // 2 - 1) * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activations' dtype (as upstream)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, -1).transpose(1, 2)  # [b, h, t, d]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self.heads(q), k, v, is_causal=causal and q.shape[1] > 1)
        return self.out(out.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, T] → features [B, ceil(T / 2), n_state]."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            h = block.attn_ln(x)
            q, k, v = block.attn.query(h), block.attn.key(h), block.attn.value(h)
            x = x + block.attn.attend(q, block.attn.heads(k), block.attn.heads(v), causal=False)
            x = x + block.mlp(block.mlp_ln(x))
        return self.ln_post(x)


class DecoderCache:
    """Self-attention keys/values of every decoder block, preallocated, plus the cross-attention
    keys/values of the audio (computed once)."""

    def __init__(self, decoder: TextDecoder, audio: torch.Tensor, max_len: int):
        b = audio.shape[0]
        first = decoder.blocks[0].attn
        n_head, d = first.n_head, first.query.out_features // first.n_head
        self.length = 0
        self.keys = [audio.new_zeros(b, n_head, max_len, d) for _ in decoder.blocks]
        self.values = [audio.new_zeros(b, n_head, max_len, d) for _ in decoder.blocks]
        self.cross = [
            (blk.cross_attn.heads(blk.cross_attn.key(audio)), blk.cross_attn.heads(blk.cross_attn.value(audio)))
            for blk in decoder.blocks
        ]


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
        )
        self.ln = LayerNorm(n_state)
        self.out_proj = nn.Linear(n_state, n_vocab)

    def forward(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Logits [B, t, n_vocab] of ``tokens`` [B, t] following the ``cache.length`` cached ones."""
        start, t = cache.length, tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[start : start + t]
        x = x.to(cache.keys[0].dtype)
        for i, block in enumerate(self.blocks):
            h = block.attn_ln(x)
            cache.keys[i][:, :, start : start + t] = block.attn.heads(block.attn.key(h))
            cache.values[i][:, :, start : start + t] = block.attn.heads(block.attn.value(h))
            k, v = cache.keys[i][:, :, : start + t], cache.values[i][:, :, : start + t]
            x = x + block.attn.attend(block.attn.query(h), k, v, causal=True)
            h = block.cross_attn_ln(x)
            ck, cv = cache.cross[i]
            x = x + block.cross_attn.attend(block.cross_attn.query(h), ck, cv, causal=False)
            x = x + block.mlp(block.mlp_ln(x))
        cache.length = start + t
        return self.out_proj(self.ln(x))


def fix_durations(dur: list[int], total: int) -> list[int]:
    """Make durations sum to ``total`` as upstream ``align`` does: the last phone takes a shortfall;
    an excess is taken one frame at a time from the first phones onwards (never below zero here)."""
    dur = list(dur)
    diff = sum(dur) - total
    if diff < 0:
        dur[-1] -= diff
    while diff > 0:
        for i in range(len(dur)):
            if diff == 0:
                break
            if dur[i] > 0:
                dur[i] -= 1
                diff -= 1
    return dur


class Aligner(nn.Module):
    """The Whisper-like aligner (upstream ``Whisper``); sizes default to upstream's (:class:`config.AlignerConfig`)."""

    def __init__(
        self,
        n_mels: int = 80,
        n_audio_ctx: int = 3000,
        n_text_ctx: int = 2048,
        n_vocab: int = 6800,
        n_state: int = 512,
        n_audio_head: int = 8,
        n_audio_layer: int = 6,
        n_text_head: int = 8,
        n_text_layer: int = 6,
    ):
        super().__init__()
        if n_vocab <= phones.TIMESTAMP_OFFSET + FRAMES_MULTIPLE:
            raise ValueError(f"n_vocab {n_vocab} leaves no room for timestamps (from {phones.TIMESTAMP_OFFSET})")
        self.n_mels = n_mels
        # upstream takes it from the DiT's config (frames_multiple); the engine may set it likewise
        self.frames_multiple = FRAMES_MULTIPLE
        self.encoder = AudioEncoder(n_mels, n_audio_ctx, n_state, n_audio_head, n_audio_layer)
        self.decoder = TextDecoder(n_vocab, n_text_ctx, n_state, n_text_head, n_text_layer)
        legal = torch.zeros(n_vocab, dtype=torch.bool)
        legal[phones.legal_phone_tokens()] = True
        self.register_buffer("_phone_slot", legal, persistent=False)

    @property
    def max_frames(self) -> int:
        """Longest reference in mel frames: the encoder's positions and the timestamp vocabulary bound it."""
        by_ctx = 2 * self.encoder.positional_embedding.shape[0]
        by_vocab = self.decoder.token_embedding.num_embeddings - 1 - phones.TIMESTAMP_OFFSET
        return min(by_ctx, by_vocab) // self.frames_multiple * self.frames_multiple

    @property
    def max_reference_seconds(self) -> float:
        """Longest padded 24 kHz reference ``align`` takes, in seconds."""
        return self.max_frames * HOP_LENGTH / MEL_SAMPLE_RATE

    def mel(self, wav_24k: np.ndarray) -> torch.Tensor:
        """Log-mel [n_mels, F] of a 24 kHz reference, cut to a multiple of ``frames_multiple`` (8) frames."""
        mel = log_mel_spectrogram(
            resample(np.asarray(wav_24k, dtype=np.float32), SAMPLE_RATE, MEL_SAMPLE_RATE), self.n_mels
        )
        return mel[:, : mel.shape[1] // self.frames_multiple * self.frames_multiple]

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor, max_steps: int = MAX_DECODE_STEPS) -> list[int]:
        """Constrained greedy decode of mel [n_mels, F]: phone/timestamp tokens, without BOS and EOS."""
        param = next(self.parameters())
        frames = mel.shape[1]
        audio = self.encoder(mel[None].to(param.device, param.dtype))
        cache = DecoderCache(self.decoder, audio, max_steps + 1)
        phone_slot = self._phone_slot
        vocab = phone_slot.numel()
        ids = torch.arange(vocab, device=phone_slot.device)
        token = torch.tensor([[phones.ALIGN_BOS]], device=param.device)
        out: list[int] = []
        last_frame = 0
        for pos in range(max_steps):
            logits = self.decoder(token, cache)[0, -1].float()
            if pos % 2 == 0:
                # a phone needs room for its end frame and the closing EOS, and a frame left to end on
                allow_phone = pos + 3 <= max_steps and last_frame < frames
                legal = phone_slot if allow_phone else torch.zeros_like(phone_slot)
                if pos >= 2 or not allow_phone:
                    legal = legal | (ids == phones.ALIGN_EOS)
            else:
                legal = (ids > phones.TIMESTAMP_OFFSET + last_frame) & (ids <= phones.TIMESTAMP_OFFSET + frames)
            choice = int(torch.where(legal, logits, float("-inf")).argmax())
            if choice == phones.ALIGN_EOS:
                break
            out.append(choice)
            if pos % 2 == 1:
                last_frame = choice - phones.TIMESTAMP_OFFSET
            token = torch.tensor([[choice]], device=param.device)
        return out

    def align(self, wav_24k: np.ndarray) -> ReferenceAlignment:
        """Phones, tones and frame → phone map of a padded 24 kHz reference (``pad_reference``)."""
        mel = self.mel(wav_24k)
        frames = mel.shape[1]
        if frames < self.frames_multiple:
            raise AudioDecodeError("the reference audio is too short to align", param="reference_audio")
        if frames > self.max_frames:
            raise AudioDecodeError(
                f"the reference audio is {frames * HOP_LENGTH / MEL_SAMPLE_RATE:.1f} s long (padded); "
                f"the aligner takes at most {self.max_reference_seconds:.1f} s",
                param="reference_audio",
            )
        tokens = self.decode(mel)
        if len(tokens) % 2:  # only possible when the step bound cuts a pair; drop the dangling phone
            tokens = tokens[:-1]
        ph, tone, dur, _ = phones.split_ph_timestamp(tokens)
        dur = torch.tensor(fix_durations(dur.tolist(), frames), dtype=torch.long)
        mel2ph = length_regulate(dur)[:, : frames // self.frames_multiple * self.frames_multiple]
        return ReferenceAlignment(ph[None], tone[None], mel2ph)

    @classmethod
    def from_config(cls, config: AlignerConfig) -> Aligner:
        return build_checked(cls, config.model_kwargs(), "aligner")

    @classmethod
    def from_checkpoint(
        cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Aligner:
        """Load ``folder`` (aligner_lm/: config.yaml + model_only_last.ckpt, inner key ``model``) strictly."""
        folder = Path(folder)
        config, file, state_dict = AlignerConfig.read(folder)
        model = cls.from_config(config)
        load_strict(model, state_dict, f"aligner checkpoint {file}")
        model = ready_for_inference(model, device, dtype)
        logger.info(
            "aligner loaded from %s (%s, %.1fM parameters) on %s in %s",
            folder,
            ", ".join(f"{k}={v}" for k, v in config.to_dict().items()),
            million_parameters(model),
            device,
            dtype,
        )
        return model
