"""MegaTTS3's autoregressive duration model: one duration code per phone, prompted with the reference.

Upstream: ``tts/modules/ar_dur/ar_dur_predictor.py`` (``ARDurPredictor`` and its ``CodePredictor``
base, with ``commons/``) and ``make_dur_prompt`` / ``dur_pred`` in ``tts/frontend_function.py``. A
phone encoder (a relative-position transformer over phone ids plus tone embeddings) gives one
vector per phone; a causal transformer with rotary positions reads, at step i, the code of phone
i − 1 plus the vector of phone i and predicts the code of phone i (code = frames + 1).

``prompt()`` runs the reference through the decoder once and keeps its keys/values: a
``DurationPrompt`` that every later ``predict()`` reads but never changes (upstream deep-copies
the state per segment; we copy only into each call's own buffers). Keys are cached already
rotated, which equals upstream's rotate-every-step since a key's position never changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import phones
from .alignment import ReferenceAlignment, length_regulate, mel2token_to_dur
from .checkpoint import (
    build_checked,
    load_strict,
    million_parameters,
    ready_for_inference,
)
from .config import DurationConfig
from .rel_transformer import RelTransformerEncoder

logger = logging.getLogger("flashtts.mega")

CHECKPOINT, INNER_KEY = DurationConfig.CHECKPOINT, DurationConfig.INNER_KEY  # upstream's file and key names

# Post-processing constants of upstream dur_pred (frames are 10 ms).
SEGMENT_GAP_FRAMES = 32  # added to a non-final segment's last phone (room for the crossfade)
FINAL_LAST_MIN, FINAL_LAST_MAX = 64, 128  # a final segment's last phone is clamped to this range
MAX_PHONE_FRAMES = 127
LONG_PAUSE_MIN = 64
SHORT_PAUSE_MIN = 32
FIRST_PHONE_FRAMES = 8  # the first phone of the first segment


def _sinusoid_table(length: int, dim: int) -> torch.Tensor:
    # tensor2tensor-style table used by upstream's PosEmb and SinusoidalPositionalEmbedding
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(length, dtype=torch.float)[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim % 2))


def _uniform(shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) numbers on the CPU, drawn from ``generator`` on its own device (the global RNG without one)."""
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=device).cpu()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x [B, H, T, d] at positions [T] (upstream RotaryEmbeddings, base 10000)."""
    d = x.shape[-1]
    theta = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float, device=x.device) / d)
    angles = positions.to(x.device, torch.float)[:, None] * theta[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return (angles.cos() * x.float() + angles.sin() * _rotate_half(x.float())).to(x.dtype)


class RotSelfAttention(nn.Module):
    """Upstream RotMultiheadAttention (self-attention, no biases): fused ``in_proj_weight``, ``out_proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not a multiple of its {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def qkv(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, D] → rotated q (pre-scaled), rotated k, v, each [B, H, T, d]."""
        b, t, _ = x.shape
        q, k, v = F.linear(x, self.in_proj_weight).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return _rotary(q * self.head_dim**-0.5, positions), _rotary(k, positions), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)).float()
        if causal:
            t = q.shape[2]
            scores = scores + torch.full((t, t), -1e8, device=q.device).triu(1)
        out = scores.softmax(-1).to(v.dtype) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """Upstream TransformerFFNLayer with kernel 1 and left padding: ``ffn_1`` is (pad, conv) so its
    weights sit at ``ffn_1.1``; GELU in between."""

    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.ffn_1 = nn.Sequential(nn.Identity(), nn.Conv1d(dim, hidden, 1, bias=bias))
        self.ffn_2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.ffn_1[1]
        h = F.linear(x, conv.weight[:, :, 0], conv.bias)
        return self.ffn_2(F.gelu(h))


class DecoderBlock(nn.Module):
    """Upstream RotDecSALayer (pre- or post-LN)."""

    def __init__(self, dim: int, num_heads: int, bias: bool, post_ln: bool):
        super().__init__()
        self.post_ln = post_ln
        self.layer_norm1 = nn.LayerNorm(dim)
        self.self_attn = RotSelfAttention(dim, num_heads)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, 4 * dim, bias)


class DecoderLayer(nn.Module):
    """Upstream RotTransformerDecoderLayer: a wrapper whose parameters live under ``op``."""

    def __init__(self, dim: int, num_heads: int, bias: bool, post_ln: bool):
        super().__init__()
        self.op = DecoderBlock(dim, num_heads, bias, post_ln)


@dataclass(frozen=True)
class DurationPrompt:
    """The reference's decoder state: per-layer keys/values [1, H, P, d], its last duration code."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    last_code: torch.Tensor  # [1, 1]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2])


class DurationModel(nn.Module):
    """Upstream ARDurPredictor for inference. Sizes are :class:`config.DurationConfig`'s fields (which
    names upstream's config keys: ``hidden_size`` is ``dur_txt_hs``, ``dec_hidden_size``
    ``dur_model_hidden_size``, …); the phone encoder's sizes those of its ``rel_fft`` encoder."""

    def __init__(
        self,
        dict_size: int = phones.PHONE_DICT_SIZE,
        hidden_size: int = 512,
        dec_hidden_size: int = 512,
        num_layers: int = 8,
        code_size: int = 128,
        dec_num_heads: int = 8,
        lm_use_enc: bool = True,
        enc_ffn_hidden_size: int = 1024,
        enc_num_heads: int = 4,
        enc_layers: int = 4,
        enc_ffn_kernel_size: int = 3,
        enc_prenet: bool = True,
        enc_pre_ln: bool = True,
        enc_window_size: int | None = 4,
        char_dict_size: int = 4000,
        use_ph_pos_embed: bool = False,
        ling_label_dict_size: dict[str, int] | None = None,
        use_bert_input: bool = False,
        use_pos_embed: bool = False,
        use_post_ln: bool = False,
        lm_bias: bool = True,
        dur_model_type: str = "ar",
        frames_multiple: int = 8,
    ):
        super().__init__()
        ling_label_dict_size = (
            {"tone": len(phones.tone_symbols()) - 3} if ling_label_dict_size is None else ling_label_dict_size
        )
        if set(ling_label_dict_size) - {"tone"}:
            raise ValueError(
                f"only the 'tone' linguistic label is fed at inference, not {sorted(ling_label_dict_size)}"
            )
        if dur_model_type not in ("ar", "ar_mse"):
            raise ValueError(f"dur_model_type {dur_model_type!r} is not 'ar' or 'ar_mse'")
        self.lm_use_enc = lm_use_enc
        self.use_ph_pos_embed = lm_use_enc and use_ph_pos_embed
        self.use_pos_embed = use_pos_embed
        self.use_post_ln = use_post_ln
        self.dur_model_type = dur_model_type
        self.code_size = code_size
        self.hidden_size = hidden_size
        self.frames_multiple = frames_multiple
        self.top_k: int | None = None  # upstream infer_top_k: None = greedy (its default)
        self.temperature = 1.0

        def text_encoder(vocab: int) -> nn.Module:
            if not lm_use_enc:
                return nn.Embedding(vocab, hidden_size, padding_idx=0)
            return RelTransformerEncoder(
                vocab,
                hidden_size,
                hidden_size,
                enc_ffn_hidden_size,
                enc_num_heads,
                enc_layers,
                enc_ffn_kernel_size,
                window_size=enc_window_size,
                prenet=enc_prenet,
                pre_ln=enc_pre_ln,
            )

        self.encoder = text_encoder(dict_size)
        if char_dict_size:  # upstream mega_use_char: built and saved, unused without character input
            self.char_encoder = text_encoder(char_dict_size)
        self.char_empty_embed = nn.Embedding(1, hidden_size)
        if use_bert_input:
            self.bert_input_proj = nn.Linear(768, hidden_size)
        self.ling_label_embed_layers = nn.ModuleDict(
            {k: nn.Embedding(s + 3, hidden_size, padding_idx=0) for k, s in ling_label_dict_size.items()}
        )
        self.enc_proj = nn.Linear(hidden_size, dec_hidden_size)
        self.code_emb = nn.Embedding(code_size + 2, dec_hidden_size, padding_idx=0)
        if use_pos_embed:
            self.embed_positions = nn.Module()
            self.embed_positions.register_buffer("_float_tensor", torch.zeros(1))
        if not use_post_ln:
            self.layer_norm = nn.LayerNorm(dec_hidden_size)
        self.layers = nn.ModuleList(
            [DecoderLayer(dec_hidden_size, dec_num_heads, lm_bias, use_post_ln) for _ in range(num_layers)]
        )
        if dur_model_type == "ar_mse":
            self.project_out_dim = nn.Sequential(nn.Linear(dec_hidden_size, 1), nn.Softplus())
        else:
            self.project_out_dim = nn.Linear(dec_hidden_size, code_size + 1)

    # -- network pieces ---------------------------------------------------------------------------

    def encode_text(self, ph: torch.Tensor, tone: torch.Tensor) -> torch.Tensor:
        """Phone vectors [1, N', D] for the non-padding phones of ph/tone [1, N] (upstream forward_ling_encoder)."""
        nonpad = (ph > 0).to(self.enc_proj.weight.dtype)[:, :, None]
        ling = sum(layer(tone) for layer in self.ling_label_embed_layers.values())
        if self.lm_use_enc:
            if self.use_ph_pos_embed:
                ling = ling + _sinusoid_table(ph.shape[1], self.hidden_size).to(nonpad)[None]
            x = self.encoder(ph, other_embeds=ling * nonpad)
        else:
            x = self.encoder(ph) + ling
        x = self.enc_proj(x * nonpad)
        return x[ph > 0][None]

    def _positions_embed(self, steps: torch.Tensor, dim: int) -> torch.Tensor:
        # upstream's incremental SinusoidalPositionalEmbedding: step s of a call sits at table row s + 1
        return _sinusoid_table(int(steps.max()) + 2, dim)[steps + 1]

    def _run(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        start: int,
        causal: bool,
    ) -> torch.Tensor:
        """Decoder layers over x [1, T, D] at absolute ``positions``, writing keys/values at ``start``."""
        t = x.shape[1]
        for i, layer in enumerate(self.layers):
            blk = layer.op
            h = x if blk.post_ln else blk.layer_norm1(x)
            q, k, v = blk.self_attn.qkv(h, positions)
            keys[i][:, :, start : start + t] = k
            values[i][:, :, start : start + t] = v
            a = blk.self_attn.attend(q, keys[i][:, :, : start + t], values[i][:, :, : start + t], causal)
            x = blk.layer_norm1(x + a) if blk.post_ln else x + a
            h = x if blk.post_ln else blk.layer_norm2(x)
            x = blk.layer_norm2(x + blk.ffn(h)) if blk.post_ln else x + blk.ffn(h)
        return x if self.use_post_ln else self.layer_norm(x)

    def _kv_buffers(self, length: int, like: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        attn = self.layers[0].op.self_attn
        shape = (1, attn.num_heads, length, attn.head_dim)
        return [like.new_zeros(shape) for _ in self.layers], [like.new_zeros(shape) for _ in self.layers]

    def _next_code(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        out = self.project_out_dim(h[:, -1]).float()
        if self.dur_model_type == "ar_mse":
            return torch.round(out[:, 0]).long()
        if self.top_k:
            logits = out / self.temperature
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = logits.softmax(-1)
            if generator is not None:
                probs = probs.to(generator.device)  # the request's generator may live elsewhere than the model
            return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)
        return out.argmax(-1)

    # -- the two calls the engine makes ---------------------------------------------------------

    @torch.inference_mode()
    def prompt(self, alignment: ReferenceAlignment) -> DurationPrompt:
        """The reference as the decoder's context (upstream make_dur_prompt)."""
        param = self.code_emb.weight
        ph = alignment.ph.to(param.device).long()
        tone = alignment.tone.to(param.device).long()
        mel2ph = alignment.mel2ph.to(param.device).long()
        codes = mel2token_to_dur(mel2ph, ph.shape[1]).clamp(max=self.code_size - 1) + 1
        codes = codes[ph > 0][None]  # [1, P]
        x_ling = self.encode_text(ph, tone)
        p = codes.shape[1]
        inputs = torch.cat([codes.new_full((1, 1), self.code_size + 1), codes[:, :-1]], dim=1)
        x = self.code_emb(inputs) + x_ling
        steps = torch.arange(p, device=param.device)
        if self.use_pos_embed:
            x = x + self._positions_embed(steps, x.shape[-1]).to(x)
        keys, values = self._kv_buffers(p, x)
        self._run(x, steps, keys, values, 0, causal=True)
        return DurationPrompt(tuple(keys), tuple(values), codes[:, -1:].clone())

    @torch.inference_mode()
    def predict(
        self,
        prompt: DurationPrompt,
        ph: torch.Tensor,
        tone: torch.Tensor,
        is_first: bool,
        is_final: bool,
        dur_disturb: float = 0.1,
        dur_alpha: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Frame → phone map [1, F] of one text segment's phones (upstream dur_pred, post-processing included).

        ``dur_alpha`` scales every duration (the engine maps ``speed`` onto it); ``dur_disturb`` the
        random ± jitter; ``generator`` makes that jitter (and top-k sampling) reproducible.
        """
        param = self.code_emb.weight
        ph = ph.to(param.device).long()
        tone = tone.to(param.device).long()
        if ph.dim() != 2 or ph.shape != tone.shape or ph.shape[0] != 1 or not bool((ph > 0).any()):
            raise ValueError(
                f"ph and tone must both be [1, N] with phones; got {tuple(ph.shape)} and {tuple(tone.shape)}"
            )
        x_ling = self.encode_text(ph, tone)
        n, p = x_ling.shape[1], prompt.length
        keys, values = self._kv_buffers(p + n, x_ling)
        for i in range(len(self.layers)):
            keys[i][:, :, :p] = prompt.keys[i]
            values[i][:, :, :p] = prompt.values[i]
        code = prompt.last_code.to(param.device)
        decoded = []
        for step in range(n):
            x = self.code_emb(code) + x_ling[:, step : step + 1]
            if self.use_pos_embed:
                x = x + self._positions_embed(torch.tensor([step]), x.shape[-1]).to(x)
            h = self._run(x, torch.tensor([p + step], device=param.device), keys, values, p + step, causal=False)
            pred = self._next_code(h, generator)
            # upstream: codes are at least 1, except that the first step keeps what it predicted
            code = (pred if step == 0 else pred.clamp_min(1))[:, None]
            decoded.append(code)
        codes = ph.new_zeros(ph.shape)
        codes[ph > 0] = torch.cat(decoded, dim=1)[0]
        return self.codes_to_mel2ph(codes, ph, is_first, is_final, dur_disturb, dur_alpha, generator)

    def codes_to_mel2ph(
        self,
        codes: torch.Tensor,
        ph: torch.Tensor,
        is_first: bool,
        is_final: bool,
        dur_disturb: float,
        dur_alpha: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Upstream dur_pred's post-processing of predicted codes [1, N] into a frame → phone map."""
        device = codes.device
        # a handful of numbers: done on the CPU, whatever the model's and the generator's devices
        codes, ph = codes.cpu(), ph.cpu()
        dur = (codes - 1).clamp(0, self.code_size - 1)
        if is_final:
            dur[:, -1] = dur[:, -1].clamp(FINAL_LAST_MIN, FINAL_LAST_MAX)
        else:
            dur[:, -1] = dur[:, -1] + SEGMENT_GAP_FRAMES
        dur = dur.float()
        choice = (_uniform(dur.shape, generator) > 0.5).float()
        factor = 1 + _uniform(dur.shape, generator) * dur_disturb
        dur = dur * factor * choice + dur / factor * (1 - choice)
        dur = torch.round(dur * dur_alpha).clamp(0, MAX_PHONE_FRAMES)
        for sil in phones.LONG_PAUSE_IDS:
            dur[ph == sil] = dur[ph == sil].clamp_min(LONG_PAUSE_MIN)
        for sil in phones.SHORT_PAUSE_IDS:
            dur[ph == sil] = dur[ph == sil].clamp_min(SHORT_PAUSE_MIN)
        if is_first:
            dur[:, 0] = FIRST_PHONE_FRAMES
        pad = self.frames_multiple - int(dur.sum()) % self.frames_multiple
        if pad < self.frames_multiple:
            dur[:, -1] += pad
        return length_regulate(dur).to(device)

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DurationConfig) -> DurationModel:
        return build_checked(cls, config.model_kwargs(), "duration model")

    @classmethod
    def from_checkpoint(
        cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DurationModel:
        """Load ``folder`` (duration_lm/: config.yaml + model_only_last.ckpt, inner key ``dur_model``) strictly."""
        folder = Path(folder)
        config, file, state_dict = DurationConfig.read(folder)
        model = cls.from_config(config)
        load_strict(model, state_dict, f"duration checkpoint {file}")
        model = ready_for_inference(model, device, dtype)
        logger.info(
            "duration model loaded from %s (%d layers × %d, code size %d, %.1fM parameters) on %s in %s",
            folder,
            config.num_layers,
            config.dec_hidden_size,
            config.code_size,
            million_parameters(model),
            device,
            dtype,
        )
        return model
