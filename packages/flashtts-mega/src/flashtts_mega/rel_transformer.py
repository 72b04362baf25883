"""The phone encoder MegaTTS3 uses in the DiT (and the duration model's `rel_fft` encoder).

A Glow-TTS style transformer encoder over channel-first sequences: a ConvReluNorm prenet, then
layers of multi-head self-attention with learned relative-position embeddings (window ±4, shared by
all heads) and a convolutional FFN. Parameter names and shapes follow upstream
(tts/modules/ar_dur/commons/rel_transformer.py) so released checkpoints load strictly.

Padding is id 0 and only ever at the right end; every sub-layer masks it, so an item of a padded
batch gives the same result as alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Masked attention logits: upstream's value, kept so results match it.
MASKED_SCORE = -1e4


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of a [B, C, T] tensor, with upstream's `gamma` / `beta` names."""

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.gamma[None, :, None] + self.beta[None, :, None]


class ConvReluNorm(nn.Module):
    """Conv → LayerNorm → ReLU, ``n_layers`` times, then a 1×1 projection added to the input."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, kernel_size: int, n_layers: int):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        self.norm_layers = nn.ModuleList()
        for i in range(n_layers):
            self.conv_layers.append(
                nn.Conv1d(
                    in_channels if i == 0 else hidden_channels, hidden_channels, kernel_size, padding=kernel_size // 2
                )
            )
            self.norm_layers.append(ChannelLayerNorm(hidden_channels))
        self.proj = nn.Conv1d(hidden_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        residual = x
        for conv, norm in zip(self.conv_layers, self.norm_layers):
            x = torch.relu(norm(conv(x * x_mask)))
        return (residual + self.proj(x)) * x_mask


class RelativeSelfAttention(nn.Module):
    """Self-attention with relative-position key/value embeddings for offsets −window..+window."""

    def __init__(self, channels: int, n_heads: int, window_size: int | None = 4):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels {channels} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        if window_size is not None:
            std = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        self.conv_o = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        h, d = self.n_heads, self.k_channels
        q = self.conv_q(x).view(b, h, d, t).transpose(2, 3)  # [b, h, t, d]
        k = self.conv_k(x).view(b, h, d, t).transpose(2, 3)
        v = self.conv_v(x).view(b, h, d, t).transpose(2, 3)
        scale = 1.0 / math.sqrt(d)
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale
        if self.window_size is not None:
            offset, inside = self._offsets(t, x.device)
            # q·E_k for each of the 2w+1 offsets, then placed on the band |j − i| ≤ w of the t×t grid.
            rel = torch.matmul(q, self.emb_rel_k.transpose(-2, -1))  # [b, h, t, 2w+1]
            band = torch.gather(rel, -1, offset.expand(b, h, t, t)) * inside
            scores = scores + band * scale
        scores = scores.masked_fill(attn_mask == 0, MASKED_SCORE)
        p_attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(p_attn, v)
        if self.window_size is not None:
            # The attention weights folded back onto offsets, times the value embeddings.
            weights = torch.zeros(b, h, t, 2 * self.window_size + 1, dtype=p_attn.dtype, device=p_attn.device)
            weights.scatter_add_(-1, offset.expand(b, h, t, t), p_attn * inside)
            out = out + torch.matmul(weights, self.emb_rel_v)
        out = out.transpose(2, 3).reshape(b, c, t)
        return self.conv_o(out)

    def _offsets(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.window_size
        pos = torch.arange(t, device=device)
        rel = pos[None, :] - pos[:, None] + w  # [t, t]: offset index of key j for query i
        inside = ((rel >= 0) & (rel <= 2 * w)).to(self.emb_rel_k.dtype)
        return rel.clamp(0, 2 * w), inside


class ConvFFN(nn.Module):
    """Conv (kernel k) → ReLU → 1×1 conv, masked at both inputs."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(x * x_mask))
        return self.conv_2(x * x_mask) * x_mask


class Encoder(nn.Module):
    """The attention + FFN stack (pre- or post-LayerNorm) of the relative transformer."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        window_size: int | None = 4,
        pre_ln: bool = False,
    ):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(RelativeSelfAttention(hidden_channels, n_heads, window_size))
            self.norm_layers_1.append(ChannelLayerNorm(hidden_channels))
            self.ffn_layers.append(ConvFFN(hidden_channels, hidden_channels, filter_channels, kernel_size))
            self.norm_layers_2.append(ChannelLayerNorm(hidden_channels))
        if pre_ln:
            self.last_ln = ChannelLayerNorm(hidden_channels)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [b, 1, t, t]
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = x * x_mask
            y = attn(norm_1(x) if self.pre_ln else x, attn_mask)
            x = x + y if self.pre_ln else norm_1(x + y)
            y = ffn(norm_2(x) if self.pre_ln else x, x_mask)
            x = x + y if self.pre_ln else norm_2(x + y)
        if self.pre_ln:
            x = self.last_ln(x)
        return x * x_mask


class RelTransformerEncoder(nn.Module):
    """Token ids [B, T] (0 = padding) plus optional extra embeddings → features [B, T, out_channels].

    Arguments in upstream's order. ``in_channels`` other than ``hidden_channels`` adds upstream's
    ``encoder_inp_proj``; ``n_vocab`` 0 takes feature vectors instead of ids.
    """

    def __init__(
        self,
        n_vocab: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float = 0.0,
        window_size: int | None = 4,
        block_length: int | None = None,
        in_channels: int | None = None,
        prenet: bool = True,
        pre_ln: bool = True,
    ):
        super().__init__()
        if block_length is not None:
            raise ValueError("block_length (block-local attention) is not used by MegaTTS3 and not supported")
        # Dropout is a training-time setting; inference never applies it.
        del p_dropout
        self.n_vocab = n_vocab
        self.hidden_channels = hidden_channels
        self.prenet = prenet
        if n_vocab > 0:
            self.emb = nn.Embedding(n_vocab, hidden_channels, padding_idx=0)
        if in_channels is None:
            in_channels = hidden_channels
        if prenet:
            self.pre = ConvReluNorm(in_channels, in_channels, in_channels, kernel_size=5, n_layers=3)
        if in_channels != hidden_channels:
            self.encoder_inp_proj = nn.Conv1d(in_channels, hidden_channels, 1)
        self.encoder = Encoder(
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            window_size=window_size,
            pre_ln=pre_ln,
        )
        del out_channels  # upstream takes it but its output width is hidden_channels

    def forward(self, x: torch.Tensor, other_embeds: torch.Tensor | float = 0.0) -> torch.Tensor:
        if self.n_vocab > 0:
            lengths = (x > 0).sum(-1)
            x = self.emb(x) * math.sqrt(self.hidden_channels)
        else:
            lengths = (x.abs().sum(-1) > 0).sum(-1)
        x = (x + other_embeds).transpose(1, 2)  # [b, c, t]
        x_mask = (torch.arange(x.size(2), device=x.device)[None, :] < lengths[:, None]).unsqueeze(1).to(x.dtype)
        if self.prenet:
            x = self.pre(x, x_mask)
        if hasattr(self, "encoder_inp_proj"):
            x = self.encoder_inp_proj(x) * x_mask
        return self.encoder(x, x_mask).transpose(1, 2)


def rel_transformer_sizes(state_dict: dict[str, torch.Tensor], prefix: str) -> dict:
    """The constructor sizes of a RelTransformerEncoder saved under ``prefix`` (e.g. "ph_encoder."),
    read from its tensors: what upstream hard-codes in Python."""

    def get(name: str) -> torch.Tensor:
        return state_dict[prefix + name]

    n_layers = 0
    while f"{prefix}encoder.attn_layers.{n_layers}.conv_q.weight" in state_dict:
        n_layers += 1
    hidden = get("encoder.attn_layers.0.conv_q.weight").shape[0]
    rel_k = state_dict.get(prefix + "encoder.attn_layers.0.emb_rel_k")
    window = None if rel_k is None else (rel_k.shape[1] - 1) // 2
    # heads share one relative embedding of width hidden / n_heads: that is where n_heads shows.
    n_heads = 1 if rel_k is None else hidden // rel_k.shape[2]
    ffn = get("encoder.ffn_layers.0.conv_1.weight")
    emb = state_dict.get(prefix + "emb.weight")
    pre = state_dict.get(prefix + "pre.conv_layers.0.weight")
    return {
        "n_vocab": 0 if emb is None else emb.shape[0],
        "out_channels": hidden,
        "hidden_channels": hidden,
        "filter_channels": ffn.shape[0],
        "n_heads": n_heads,
        "n_layers": n_layers,
        "kernel_size": ffn.shape[2],
        "window_size": window,
        "in_channels": hidden if pre is None else pre.shape[1],
        "prenet": pre is not None,
        "pre_ln": prefix + "encoder.last_ln.gamma" in state_dict,
    }
