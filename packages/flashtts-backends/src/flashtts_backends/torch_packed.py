"""bfloat16 linear layers of the LLM body prepacked for oneDNN on a CPU (``--llm_linear``).

``F.linear`` on a CPU multiplies by the weight in its plain [out, in] layout on every call.
Reordered once at load into oneDNN's blocked layout for its bfloat16 kernels (``torch.ops.mkldnn.
_reorder_linear_weight``, what torch.compile's freezing does to constant weights), a decode step's
linear layers read the same bytes, laid out as the AVX-512/AMX kernel walks them: Spark's 0.5B
body goes from 57 to 45 ms per step on two cores (1.28x; bench/torch_linear.py), the torch backend
from 11.7 to 14.5 tokens/s. The products and their float32 accumulation are oneDNN's either way; only
the order of the sums may differ (within bfloat16 rounding of the output, tested).

float32 weights gain nothing (oneDNN's packed float32 GEMV was slower than aten's here), so
``auto`` packs only a bfloat16 model on a CPU whose torch has the mkldnn ops; int8 layers
(``--llm_quantization int8``) are not touched. The embeddings and the output head stay as loaded
(the head is read by row subsets, torch_head.py).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("flashtts.backend.torch")


def can_pack(device: str, dtype: torch.dtype) -> tuple[bool, str]:
    """Whether a model on ``device`` in ``dtype`` can be packed, and why not."""
    if not str(device).startswith("cpu"):
        return False, f"the LLM is on {device}, not the CPU"
    if dtype != torch.bfloat16:
        return False, f"the LLM is in {str(dtype).replace('torch.', '')}, not bfloat16"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False, "this torch has no oneDNN (mkldnn) linear ops"
    return True, ""


class PackedLinear(torch.nn.Module):
    """``y = x @ W.T + b`` with W in oneDNN's blocked layout, reordered once."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("weight_packed", torch.ops.mkldnn._reorder_linear_weight(weight, None))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, shape[-1]), self.weight_packed, self.bias, "none", [], ""
        )
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"


def pack_linears(model) -> int:
    """Every ``nn.Linear`` of the decoder body as a :class:`PackedLinear`; returns how many."""
    from .torch_quant import replace_body_linears

    replaced = replace_body_linears(model, PackedLinear)
    logger.info("torch backend: %d linear layers of the decoder prepacked for oneDNN (bfloat16, CPU)", replaced)
    return replaced
