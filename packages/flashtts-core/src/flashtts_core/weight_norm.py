"""Old-style weight norm for the convolutions of released vocoder checkpoints (Spark's BiCodec, Mega's WaveVAE).

Those checkpoints store each normalised weight as a ``weight_g`` / ``weight_v`` pair, which only the
deprecated ``torch.nn.utils.weight_norm`` produces (its ``parametrizations`` successor names them
differently). The modules are built with it so the checkpoints load strictly, then the pairs are
folded into plain weights for inference.

Needs torch, which flashtts-core itself does not depend on: only engines that bring torch import this.
"""

from __future__ import annotations

import warnings
from typing import cast

from torch import nn


def weight_norm(module: nn.Module) -> nn.Module:
    """``module`` with old-style weight norm (``weight_g`` / ``weight_v``), without the deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


def wn_conv1d(*args, **kwargs) -> nn.Conv1d:
    return cast(nn.Conv1d, weight_norm(nn.Conv1d(*args, **kwargs)))


def wn_conv_transpose1d(*args, **kwargs) -> nn.ConvTranspose1d:
    return cast(nn.ConvTranspose1d, weight_norm(nn.ConvTranspose1d(*args, **kwargs)))


def fold_weight_norms(model: nn.Module) -> int:
    """Replace every ``weight_g`` / ``weight_v`` pair by the plain weight it stands for; returns the count."""
    folded = 0
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            nn.utils.remove_weight_norm(module)
            folded += 1
    return folded
