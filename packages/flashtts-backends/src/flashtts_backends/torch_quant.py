"""int8 weight-only linear layers for the torch backend (``--llm_quantization int8``).

A CPU decode step is bound by reading the weights: int8 halves what bfloat16 reads. Each output
channel of a linear layer keeps its own scale (symmetric, max-abs / 127); activations stay in
bfloat16 and the product runs in aten's ``_weight_int8pack_mm`` kernel (the one gpt-fast uses on
CPU). Only the decoder body is quantized: the embeddings, and the output head the engine reads
row subsets of (torch_head.py), stay as loaded.

That kernel is made for decode steps (one row per sequence): it dequantizes inside its inner loop,
so its cost grows with the rows as fast as a plain matmul's but from a slower start. A prompt
(``DEQUANTIZE_ROWS`` rows or more) instead multiplies by the layer's weight dequantized to bfloat16
for that call: a 300-token prompt through Spark's 0.5B body takes 0.2 s instead of 1.4 s on two
cores (bench/torch_linear.py), and its products differ from the kernel's by bfloat16 rounding only.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("flashtts.backend.torch")

QUANTIZATIONS = ("int8",)
ROWS_PER_CHUNK = 64
# From this many rows (a prompt), a call multiplies by the dequantized weight instead of the kernel.
DEQUANTIZE_ROWS = 32


class Int8Linear(torch.nn.Module):
    """``y = x @ (q * scale).T + bias`` with q int8 [out, in] and one scale per output channel."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        # The kernel takes the scales in the activations' dtype: round them (up, so no weight falls
        # outside +-127) before quantizing, and every weight is within half a step of its float value.
        exact = weight.abs().amax(dim=1).float().clamp(min=1e-12) / 127.0
        scale = (exact * (1 + 2**-7)).to(compute_dtype)
        q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
        # A few rows at a time: float32 temporaries of a whole layer would be tens of MB each, and
        # freed ones stay in the process (malloc keeps them), so RSS would grow by the model's size.
        for start in range(0, weight.shape[0], ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            q[rows] = torch.round(weight[rows].float() / scale[rows].float()[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if flat.dtype != self.compute_dtype:  # the kernel has no fast float32 path: compute in bf16
            flat = flat.to(self.compute_dtype)
        if flat.shape[0] >= DEQUANTIZE_ROWS:
            weight = self.weight_int8.to(self.compute_dtype) * self.scale[:, None]
            out = torch.mm(flat, weight.t())
        else:
            out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight_int8, self.scale)
        out = out.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scale.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def replace_body_linears(model, make) -> int:
    """Replace every ``nn.Linear`` of the decoder body with ``make(linear)`` in place (int8 here,
    prepacked in torch_packed); returns how many were replaced. Each float weight is freed as its
    layer goes, and the rest of the model stops holding the checkpoint's memory map."""
    body = model.get_decoder()
    replaced = 0
    with torch.no_grad():
        for parent in list(body.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, make(child))
                    replaced += 1
    release_checkpoint_mapping(model)
    return replaced


def quantize_int8(model) -> int:
    """Every ``nn.Linear`` of the decoder body as an :class:`Int8Linear`; returns how many."""
    replaced = replace_body_linears(model, Int8Linear)
    logger.info("torch backend: %d linear layers of the decoder quantized to int8 (weight-only, per channel)", replaced)
    return replaced


def release_checkpoint_mapping(model) -> None:
    """Give the remaining float tensors their own memory (after the body's linears were replaced). A checkpoint already in the model's dtype
    (a bf16 safetensors file for a bf16 model) is loaded as views of its memory map, which stays
    mapped, and its pages resident, while any tensor still points into it: the embeddings alone
    keep the whole 6.6 GB file of Orpheus 3B mapped after its body is quantized (RSS 8.8 -> 4.2 GB)."""
    seen: set[int] = set()  # tied weights (embeddings = head) are one Parameter: copied once
    with torch.no_grad():
        for module in model.modules():
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None and tensor.is_floating_point() and id(tensor) not in seen:
                        seen.add(id(tensor))
                        tensor.data = tensor.data.clone()
