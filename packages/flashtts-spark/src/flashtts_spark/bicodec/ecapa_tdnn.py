"""ECAPA-TDNN speaker network (with global-context attentive statistics pooling) on mel frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv1dReluBn(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        padding: int = 0,
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Splits channels into `scale` groups; each group's conv also sees the previous group's output."""

    def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} not divisible by scale {scale}")
        self.width = channels // scale
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, padding=padding, dilation=dilation) for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(x, self.width, dim=1)
        out = []
        y = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = pieces[i] if i == 0 else y + pieces[i]
            y = bn(F.relu(conv(y)))
            out.append(y)
        out.append(pieces[-1])
        return torch.cat(out, dim=1)


class SE_Connect(nn.Module):
    """Squeeze-and-excitation over time."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * w.unsqueeze(2)


class SE_Res2Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int):
        super().__init__()
        self.se_res2block = nn.Sequential(
            Conv1dReluBn(channels, channels),
            Res2Conv1dReluBn(channels, kernel_size, padding, dilation, scale),
            Conv1dReluBn(channels, channels),
            SE_Connect(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_res2block(x)


class ASTP(nn.Module):
    """Attentive statistics pooling; the attention also sees the utterance mean and std."""

    def __init__(self, in_dim: int, bottleneck_dim: int = 128):
        super().__init__()
        self.linear1 = nn.Conv1d(in_dim * 3, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True).expand_as(x)
        std = torch.sqrt(x.var(dim=-1, keepdim=True) + 1e-7).expand_as(x)
        alpha = torch.softmax(
            self.linear2(torch.tanh(self.linear1(torch.cat((x, mean, std), dim=1)))),
            dim=2,
        )
        mu = torch.sum(alpha * x, dim=2)
        var = torch.sum(alpha * x**2, dim=2) - mu**2
        return torch.cat([mu, torch.sqrt(var.clamp(min=1e-7))], dim=1)


class ECAPA_TDNN(nn.Module):
    """(B, feat_dim, T) mel → x-vector (B, embed_dim) and frame latent (B, 3·channels, T).

    Upstream hard-codes 512 channels; `channels` lets tiny test models shrink it.
    """

    def __init__(self, feat_dim: int, embed_dim: int, channels: int = 512):
        super().__init__()
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SE_Res2Block(channels, kernel_size=3, padding=2, dilation=2, scale=8)
        self.layer3 = SE_Res2Block(channels, kernel_size=3, padding=3, dilation=3, scale=8)
        self.layer4 = SE_Res2Block(channels, kernel_size=3, padding=4, dilation=4, scale=8)
        self.conv = nn.Conv1d(channels * 3, channels * 3, kernel_size=1)
        self.pool = ASTP(channels * 3)
        self.bn = nn.BatchNorm1d(channels * 6)
        self.linear = nn.Linear(channels * 6, embed_dim)

    def latent(self, mel: torch.Tensor) -> torch.Tensor:
        out2 = self.layer2(self.layer1(mel))
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        return F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.latent(mel)
        return self.linear(self.bn(self.pool(latent))), latent
