"""MegaTTS3's diffusion transformer (DiT) and its flow-matching sampler.

The network (upstream tts/modules/llm_dit/: ``Diffusion``, ``Transformer``, ``TimestepEmbedding``)
predicts a velocity for the 25 Hz, 32-channel WaveVAE latent from
- the noisy latent, with the reference part masked out,
- local conditioning: the reference latent and its mask (``lat_ctx``, ``ctx_mask``),
- linguistic features: phones + tones through a relative transformer, expanded to mel frames
  (100 Hz) by ``mel2ph`` and downsampled ×4 by two strided convolutions,
- the flow time, through AdaLN-zero modulation in every block.
Parameter names and shapes are upstream's so the released checkpoint loads strictly.

``DiT.sample`` runs upstream's sampler (sway time schedule, AMO overshooting steps with fresh noise
every step, three-row classifier-free guidance) for several requests at once: their CFG triples are
stacked into one padded, masked batch, and each request draws its noise from its own generator, so a
request gives the same latent batched with others or alone.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from flashtts_core.errors import ModelLoadError
from torch import nn

from .alignment import LATENT_STRIDE
from .checkpoint import (
    SHOWN_KEYS,
    build_checked,
    build_for_loading,
    load_strict,
    million_parameters,
    ready_for_inference,
)
from .config import DiTConfig
from .rel_transformer import RelTransformerEncoder

logger = logging.getLogger("flashtts.mega")

CHECKPOINT, INNER_KEY = DiTConfig.CHECKPOINT, DiTConfig.INNER_KEY  # upstream's file and key names

# A checkpoint may carry tensors of training-only sub-modules the inference graph lacks (the released
# file has 9 such tensors, which is why upstream loads it with strict=False). More than this many
# is taken for a wrong file rather than extras.
MAX_EXTRA_TENSORS = 32
# Constants some training code saved as buffers; we compute them (RoPE angles) instead.
DERIVED_BUFFERS = frozenset({"encoder.freqs_cis"})


# ----------------------------------------------------------------------------------------------
# Building blocks (upstream tts/modules/llm_dit/transformer.py and time_embedding.py)


def rope_angles(length: int, head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Rotation angles [length, head_dim / 2] of rotary embeddings on interleaved channel pairs."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    return torch.outer(torch.arange(length, device=device).float(), freqs)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[2i], x[2i+1]) of x [B, T, H, D] by the angles; computed in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class AdaLNZero(nn.Module):
    """Six modulation vectors from the time embedding; returns the modulated attention input."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(F.silu(emb)).chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLNZeroOut(nn.Module):
    """Final scale/shift modulation (upstream ``AdaLNZero_Out``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(emb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"encoder_dim {dim} is not a multiple of encoder_n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.wo = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.n_heads, self.head_dim)
        v = self.wv(x).view(b, t, self.n_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # key_mask [B, T] (True = a real frame): padded frames of shorter requests are never attended to.
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask[:, None, None, :]
        )
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)))


def ffn_hidden_size(dim: int, multiple_of: int = 256) -> int:
    """Upstream's FFN width: 2·dim rounded up to a multiple of 256."""
    return multiple_of * ((2 * dim + multiple_of - 1) // multiple_of)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.attention = Attention(dim, n_heads)
        self.feed_forward = FeedForward(dim, ffn_dim)
        self.attention_norm = AdaLNZero(dim)
        self.ffn_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x, t, cos, sin, key_mask):
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attention_norm(x, t)
        h = x + gate_msa[:, None] * self.attention(norm, cos, sin, key_mask)
        norm = self.ffn_norm(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return h + gate_mlp[:, None] * self.feed_forward(norm)


class Transformer(nn.Module):
    """Bidirectional transformer with RoPE and AdaLN-zero conditioning on the flow time."""

    def __init__(self, n_layers: int, dim: int, n_heads: int, ffn_dim: int, max_seq_len: int = 16384):
        super().__init__()
        self.head_dim = dim // n_heads
        self.max_seq_len = max_seq_len
        self.layers = nn.ModuleList(TransformerBlock(dim, n_heads, ffn_dim) for _ in range(n_layers))
        self.norm = AdaLNZeroOut(dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.max_seq_len:
            raise ValueError(f"{x.size(1)} latent frames exceed the DiT's max_seq_len {self.max_seq_len}")
        angles = rope_angles(x.size(1), self.head_dim, device=x.device)
        cos, sin = angles.cos(), angles.sin()
        for layer in self.layers:
            x = layer(x, t, cos, sin, key_mask)
        return self.out_proj(self.norm(x, t))


class SinusPositionEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
        angles = scale * t.float()[:, None] * freqs[None]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    """Flow time t [B] → [B, dim]: sinusoids (256) then a SiLU MLP (upstream's F5-TTS variant)."""

    def __init__(self, dim: int, freq_embed_dim: int = 256):
        super().__init__()
        self.time_embed = SinusPositionEmbedding(freq_embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(freq_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_embed(t).to(self.time_mlp[0].weight.dtype))


def phone_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal phone-position embedding [1, length, dim] (upstream PosEmb, no parameters)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=device) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(length, device=device)[None, :, None] * freqs[None, None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def expand_to_frames(h: torch.Tensor, mel2ph: torch.Tensor) -> torch.Tensor:
    """Phone features [B, L, C] → frame features [B, F, C]; mel2ph is 1-based, 0 gives zeros."""
    h = F.pad(h, (0, 0, 1, 0))
    return torch.gather(h, 1, mel2ph[..., None].expand(-1, -1, h.size(-1)))


# ----------------------------------------------------------------------------------------------
# Sampling


def sway_schedule(steps: int, coef: float = -1.0) -> torch.Tensor:
    """Flow times 0 → 1 in ``steps`` steps, denser near 0 for a negative sway coefficient (float32)."""
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float32)
    return t + coef * (torch.cos(torch.pi / 2 * t) - 1 + t)


def amo_step(
    z: torch.Tensor, t: float, t_next: float, v: torch.Tensor, noise: torch.Tensor, c: float = 3.0
) -> torch.Tensor:
    """One AMO step (overshoot to o = t_next + c·(t_next − t), then re-noise back to t_next)."""
    o = min(t_next + c * (t_next - t), 1.0)
    a = t_next / o
    b = max((1 - t_next) ** 2 - (a * (1 - o)) ** 2, 0.0) ** 0.5
    return a * (z + (o - t) * v) + b * noise


@dataclass
class DiTInput:
    """One request's prepared inputs for one segment: the CFG triple (speaker+text, text, uncond).

    Shapes as upstream's prepare_inputs_for_dit builds them: phone, tone [3, L] long (0 = padding);
    lat_ctx [3, T, 32] (the reference latent, zero past it); ctx_mask [3, T, 1] (1 on the reference);
    dur = mel2ph [3, F] long with F = 4·T. The sampling settings default to ``DiT.sample``'s
    arguments; ``generator`` makes the request's noise its own (same seed ⇒ same latent, however
    it is batched).
    """

    phone: torch.Tensor
    tone: torch.Tensor
    lat_ctx: torch.Tensor
    ctx_mask: torch.Tensor
    dur: torch.Tensor
    generator: torch.Generator | None = None
    time_step: int | None = None
    p_w: float | None = None
    t_w: float | None = None

    def check(self, channels: int) -> None:
        if self.phone.dim() != 2 or self.phone.size(0) != 3 or self.tone.shape != self.phone.shape:
            raise ValueError(
                f"phone and tone must both be [3, L], got {tuple(self.phone.shape)} / {tuple(self.tone.shape)}"
            )
        if self.lat_ctx.dim() != 3 or self.lat_ctx.size(0) != 3 or self.lat_ctx.size(2) != channels:
            raise ValueError(f"lat_ctx must be [3, T, {channels}], got {tuple(self.lat_ctx.shape)}")
        frames = self.lat_ctx.size(1)
        if self.ctx_mask.shape != (3, frames, 1):
            raise ValueError(f"ctx_mask must be [3, {frames}, 1], got {tuple(self.ctx_mask.shape)}")
        if self.dur.shape != (3, frames * LATENT_STRIDE):
            raise ValueError(
                f"dur (mel2ph) must be [3, {frames * LATENT_STRIDE}] for {frames} latent frames, got {tuple(self.dur.shape)}"
            )
        if frames < 1 or self.phone.size(1) < 1:
            raise ValueError("a DiT input needs at least one phone and one latent frame")


def _pad_stack(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack [3, n, ...] tensors along dim 0 after zero-padding dim 1 to ``length``."""
    out = []
    for x in tensors:
        pad = [0, 0] * (x.dim() - 2) + [0, length - x.size(1)]
        out.append(F.pad(x, pad))
    return torch.cat(out, dim=0)


# ----------------------------------------------------------------------------------------------
# The model


class DiT(nn.Module):
    """Upstream's ``Diffusion``: sizes are arguments (defaults = upstream's hard-coded values, as
    :class:`config.DiTConfig`'s)."""

    def __init__(
        self,
        encoder_dim: int = 1024,
        encoder_n_layers: int = 24,
        encoder_n_heads: int = 16,
        ffn_dim: int | None = None,
        local_cond_dim: int = 512,
        ctx_mask_dim: int = 16,
        in_channels: int = 32,
        out_channels: int = 32,
        max_seq_len: int = 16384,
        time_freq_dim: int = 256,
        ph_dict_size: int = 302,
        tone_dict_size: int = 32,
        ph_encoder_filter: int | None = None,
        ph_encoder_heads: int = 4,
        ph_encoder_layers: int = 6,
        ph_encoder_kernel: int = 3,
        ph_encoder_window: int = 4,
    ):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ctx_mask_proj = nn.Linear(1, ctx_mask_dim)
        self.local_cond_project = nn.Linear(out_channels + ctx_mask_dim, local_cond_dim)
        self.encoder = Transformer(
            encoder_n_layers, encoder_dim, encoder_n_heads, ffn_dim or ffn_hidden_size(encoder_dim), max_seq_len
        )
        self.x_prenet = nn.Linear(in_channels, encoder_dim)
        self.prenet = nn.Linear(local_cond_dim, encoder_dim)
        self.postnet = nn.Linear(encoder_dim, out_channels)
        self.f5_time_embed = TimestepEmbedding(encoder_dim, time_freq_dim)
        self.ph_encoder = RelTransformerEncoder(
            ph_dict_size,
            encoder_dim,
            encoder_dim,
            ph_encoder_filter or 2 * encoder_dim,
            ph_encoder_heads,
            ph_encoder_layers,
            ph_encoder_kernel,
            window_size=ph_encoder_window,
            prenet=True,
            pre_ln=True,
        )
        self.tone_embed = nn.Embedding(tone_dict_size, encoder_dim, padding_idx=0)
        self.ling_pre_net = nn.Sequential(
            nn.Conv1d(encoder_dim, encoder_dim, kernel_size=4, stride=2, padding=1),
            nn.Conv1d(encoder_dim, encoder_dim, kernel_size=4, stride=2, padding=1),
        )

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DiTConfig) -> DiT:
        return build_checked(cls, config.model_kwargs(), "DiT")

    @classmethod
    def from_checkpoint(
        cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DiT:
        """diffusion_transformer/{config.yaml, model_only_last.ckpt} (inner key ``dit``), loaded strictly
        into the model its :class:`DiTConfig` describes."""
        start = time.perf_counter()
        config, file, state_dict = DiTConfig.read(folder)
        model = build_for_loading(lambda: cls.from_config(config), state_dict)
        state_dict = drop_training_extras(model, state_dict, file)
        load_strict(model, state_dict, f"DiT checkpoint {file}")
        model = ready_for_inference(model, device, dtype)
        logger.info(
            "DiT loaded from %s: %d layers × %d, %.1fM parameters, on %s, %s, in %.1f s",
            file,
            config.encoder_n_layers,
            config.encoder_dim,
            million_parameters(model),
            device,
            dtype,
            time.perf_counter() - start,
        )
        return model

    # -- network ---------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.x_prenet.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.x_prenet.weight.device

    def linguistic_features(
        self, phone: torch.Tensor, tone: torch.Tensor, mel2ph: torch.Tensor, latent_frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Phones + tones [B, L] and mel2ph [B, F] → features at the latent rate [B, F/4, dim].

        ``latent_frames`` [B]: each item's own length when the batch is padded."""
        nonpadding = (phone > 0).to(self.dtype)[:, :, None]
        other = self.tone_embed(tone) + phone_positions(phone.size(1), self.encoder_dim, phone.device).to(self.dtype)
        x = self.ph_encoder(phone, other_embeds=other * nonpadding) * nonpadding
        x = expand_to_frames(x, mel2ph).transpose(1, 2)  # [B, dim, F]
        # Zero what lies past each item's frames between the two strided convolutions, so a padded
        # batch item sees the same zero padding as alone.
        x = self.ling_pre_net[0](x)
        if latent_frames is not None:
            inside = torch.arange(x.size(2), device=x.device)[None, :] < 2 * latent_frames[:, None]
            x = x * inside[:, None].to(x.dtype)
        return self.ling_pre_net[1](x).transpose(1, 2)

    def local_condition(self, lat_ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        return self.local_cond_project(torch.cat([lat_ctx, self.ctx_mask_proj(ctx_mask)], dim=-1))

    def velocity(
        self,
        x: torch.Tensor,
        local_cond: torch.Tensor,
        x_ling: torch.Tensor,
        t: torch.Tensor,
        ctx_mask: torch.Tensor,
        key_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The network's prediction for noisy latents x [B, T, 32] at flow times t [B]."""
        x = x * (1 - ctx_mask)
        h = self.x_prenet(x) + self.prenet(local_cond) + x_ling
        return self.postnet(self.encoder(h, self.f5_time_embed(t), key_mask))

    # -- sampling --------------------------------------------------------------------------------

    @torch.inference_mode()
    def sample(
        self,
        batch: list[DiTInput],
        time_step: int = 32,
        p_w: float = 1.6,
        t_w: float = 2.5,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Latents [T_i, 32] (float32, on the model's device) for each input, all in one batched
        forward per step. An input without its own generator draws from ``generator``."""
        if not batch:
            return []
        for item in batch:
            item.check(self.in_channels)
        device, dtype = self.device, self.dtype
        frames = [item.lat_ctx.size(1) for item in batch]
        steps = [int(item.time_step if item.time_step is not None else time_step) for item in batch]
        if any(s < 1 for s in steps):
            raise ValueError(f"time_step must be at least 1, got {min(steps)}")
        weights = [
            (float(item.p_w if item.p_w is not None else p_w), float(item.t_w if item.t_w is not None else t_w))
            for item in batch
        ]
        t_max, l_max = max(frames), max(item.phone.size(1) for item in batch)

        phone = _pad_stack([item.phone.long() for item in batch], l_max).to(device)
        tone = _pad_stack([item.tone.long() for item in batch], l_max).to(device)
        mel2ph = _pad_stack([item.dur.long() for item in batch], t_max * LATENT_STRIDE).to(device)
        # Only the speaker+text row of each triple sees the reference latent (upstream zeroes the rest).
        lat_ctx = _pad_stack([item.lat_ctx.float() * _first_row_only() for item in batch], t_max)
        ctx_mask = _pad_stack([item.ctx_mask.float() for item in batch], t_max)
        lat_ctx, ctx_mask = lat_ctx.to(device, dtype), ctx_mask.to(device, dtype)
        row_frames = torch.tensor(frames, device=device).repeat_interleave(3)
        key_mask = torch.arange(t_max, device=device)[None, :] < row_frames[:, None]

        x_ling = self.linguistic_features(phone, tone, mel2ph, row_frames)
        local_cond = self.local_condition(lat_ctx, ctx_mask)

        def noise(i: int) -> torch.Tensor:
            gen = batch[i].generator or generator
            gen_device = gen.device if gen is not None else torch.device("cpu")
            return torch.randn((1, frames[i], self.out_channels), generator=gen, device=gen_device).to(device)

        schedules = {s: sway_schedule(s).tolist() for s in set(steps)}
        latents = [noise(i) for i in range(len(batch))]
        for step in range(max(steps)):
            # Requests with fewer steps are done; the others go on in a smaller batch.
            active = [i for i in range(len(batch)) if step < steps[i]]
            conditions = (local_cond, x_ling, ctx_mask, key_mask)
            if len(active) < len(batch):
                rows = torch.tensor([3 * i + r for i in active for r in range(3)], device=device)
                conditions = tuple(c.index_select(0, rows) for c in conditions)
            cond, ling, mask, keys = conditions
            t = torch.tensor([schedules[steps[i]][step] for i in active for _ in range(3)], device=device)
            x = torch.cat([F.pad(latents[i], (0, 0, 0, t_max - frames[i])).expand(3, -1, -1) for i in active])
            pred = self.velocity(x.to(dtype), cond, ling, t.to(dtype), mask, keys).float()
            for n, i in enumerate(active):
                spk_txt, txt, uncond = pred[3 * n : 3 * n + 3, : frames[i]].unsqueeze(1)
                p, tw = weights[i]
                v = uncond + p * (txt - uncond) + tw * (spk_txt - txt)
                sched = schedules[steps[i]]
                latents[i] = amo_step(latents[i], sched[step], sched[step + 1], v, noise(i))
                # upstream feeds the next step in the model's dtype: round the same way
                latents[i] = latents[i].to(dtype).float()
        return [z[0] for z in latents]


def _first_row_only() -> torch.Tensor:
    return torch.tensor([1.0, 0.0, 0.0])[:, None, None]


def drop_training_extras(model: nn.Module, state_dict: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """Drop tensors that belong to sub-modules the inference model does not have (logged by name).

    A tensor unknown to a module the model *does* have is kept, so load_strict refuses it.
    """
    own = set(model.state_dict())
    modules = {name for name, _ in model.named_modules()}
    extras = [k for k in state_dict if k not in own and (k in DERIVED_BUFFERS or k.rpartition(".")[0] not in modules)]
    if not extras:
        return state_dict
    if len(extras) > MAX_EXTRA_TENSORS:
        raise ModelLoadError(
            f"DiT checkpoint {file} holds {len(extras)} tensors the model has no place for "
            f"(e.g. {', '.join(extras[:SHOWN_KEYS])}): not a MegaTTS3 DiT checkpoint?"
        )
    logger.info(
        "DiT checkpoint %s: %d training-only tensors not used at inference: %s", file, len(extras), ", ".join(extras)
    )
    return {k: v for k, v in state_dict.items() if k not in set(extras)}
