"""Spark's BiCodec decoder: where bfloat16's error comes from, and what each precision costs (issue 20, item 3).

    python bench/codec.py                     # variants side by side (about a minute on 2 cores)
    python bench/codec.py --per-module        # also: the error of each module alone in bfloat16
    python bench/codec.py --seconds 5 --repeats 5

A full-size random BiCodec (the released config, weight norm folded, seeded) decodes the same random
tokens in every variant; the float32 decode is the reference. Variants run interleaved in one process,
``--repeats`` times each, and the table gives medians and the ratio to float32:

- float32: the decoder as loaded (``--bicodec_decoder plain``);
- packed: ``--bicodec_decoder packed`` (the CPU default): the same float32 arithmetic with channels-last
  convolutions and the upsampling as polyphase convolutions (flashtts_spark.bicodec.packed);
- bfloat16: ``--detokenizer_dtype bfloat16`` (prenet and wave generator cast whole);
- packed-bf16: both;
- mixed-N: only the matrix products (convolutions, linear layers) of the prenet and of the first N
  decoder blocks in bfloat16; every Snake, residual sum, norm and the rest of the decoder in float32.

Error: max |out - float32| / max |float32| (peak) and the SNR in dB. ``--per-module`` casts one
module at a time to bfloat16 (inputs cast in, outputs cast back to float32) with the rest in float32.
Random weights: the error figures are those of this network's shapes and depth, not of trained audio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

TOKENS_PER_SECOND = 50


def build(seed: int = 0):
    from flashtts_spark.bicodec.model import BiCodec
    from flashtts_spark.bicodec.tiny import RELEASED_BICODEC_CONFIG

    torch.manual_seed(seed)
    model = BiCodec.from_config(RELEASED_BICODEC_CONFIG)
    model.remove_weight_norm()
    return model.eval()


def _float_out(out):
    if isinstance(out, tuple):
        return tuple(_float_out(x) for x in out)
    return out.float() if torch.is_tensor(out) and out.is_floating_point() else out


def in_bfloat16(module: nn.Module) -> nn.Module:
    """Cast ``module`` to bfloat16 with its floating inputs cast in and its outputs cast back to float32."""
    module.to(torch.bfloat16)
    module.register_forward_pre_hook(
        lambda _m, args: tuple(a.bfloat16() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    )
    module.register_forward_hook(lambda _m, _args, out: _float_out(out))
    return module


def products(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear))]


def apply_variant(model, name: str) -> None:
    if name == "float32":
        return
    if name == "packed":
        model.pack_decoder()
        return
    if name in ("bfloat16", "packed-bf16"):
        if name == "packed-bf16":
            model.pack_decoder()
        in_bfloat16(model.prenet)
        in_bfloat16(model.decoder)
        return
    if name.startswith("mixed-"):
        blocks = list(model.decoder.model)[1:-3]  # the DecoderBlocks, between the first conv and snake/conv/tanh
        for m in products(model.prenet) + [m for block in blocks[: int(name[6:])] for m in products(block)]:
            in_bfloat16(m)
        return
    raise ValueError(name)


def decode(model, semantic: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
    """BiCodec.detokenize's path, its inputs in float32 (hooks cast where a module is bfloat16)."""
    with torch.inference_mode():
        z_q = model.quantizer.detokenize(semantic)
        d_vector = model.speaker_encoder.detokenize(global_tokens)
        x = model.prenet(z_q, d_vector) + d_vector.unsqueeze(-1)
        return model.decoder(x).float()


def error(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = out - ref
    noise = max(diff.pow(2).sum().item(), 1e-30)
    return diff.abs().max().item() / ref.abs().max().item(), 10 * torch.log10(ref.pow(2).sum() / noise).item()


def candidate_modules(model) -> dict[str, nn.Module]:
    out = {"prenet": model.prenet}
    for i, block in enumerate(model.prenet.vocos_backbone.convnext):
        out[f"prenet.convnext.{i}"] = block
    layers = list(model.decoder.model)
    out["decoder.first_conv"] = layers[0]
    for i, block in enumerate(layers[1:-3], 1):
        snake, upsample, *units = block.block
        out[f"decoder.block{i}.snake"] = snake
        out[f"decoder.block{i}.upsample"] = upsample
        for j, unit in enumerate(units):
            out[f"decoder.block{i}.unit{j}.block"] = unit.block
            out[f"decoder.block{i}.unit{j}.conv7"] = unit.block[1]
    out["decoder.final_snake"] = layers[-3]
    out["decoder.final_conv"] = layers[-2]
    return out


def per_module(model, semantic, global_tokens, ref) -> None:
    print("\nEach module alone in bfloat16 (rest float32): error vs float32")
    for name, module in candidate_modules(model).items():
        saved = {k: v.clone() for k, v in module.state_dict().items()}
        handles = []
        module.to(torch.bfloat16)
        handles.append(
            module.register_forward_pre_hook(
                lambda _m, args: tuple(
                    a.bfloat16() if torch.is_tensor(a) and a.is_floating_point() else a for a in args
                )
            )
        )
        handles.append(module.register_forward_hook(lambda _m, _a, out: _float_out(out)))
        peak_err, snr = error(decode(model, semantic, global_tokens), ref)
        for h in handles:
            h.remove()
        module.to(torch.float32)
        module.load_state_dict(saved)
        print(f"  {name:32s} {peak_err:9.2e} of peak   SNR {snr:5.1f} dB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="audio seconds per decode")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="float32,packed,bfloat16,packed-bf16")
    parser.add_argument("--per-module", action="store_true")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    semantic = torch.randint(0, 8192, (1, args.seconds * TOKENS_PER_SECOND), generator=gen)
    global_tokens = torch.randint(0, 4096, (1, 32, 1), generator=gen)
    names = args.variants.split(",")
    models = {}
    for name in names:
        models[name] = build()
        apply_variant(models[name], name)
    reference_model = models.get("float32") or build()
    ref = decode(reference_model, semantic, global_tokens)
    print(
        f"full-size random BiCodec, {args.seconds} s of audio, {torch.get_num_threads()} threads, "
        f"peak {ref.abs().max().item():.4f}, bf16 dot product: {torch.backends.mkldnn.is_available()}"
    )
    if args.per_module:
        per_module(reference_model, semantic, global_tokens, ref)
    errors = {name: error(decode(models[name], semantic, global_tokens), ref) for name in names}  # and warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            decode(models[name], semantic, global_tokens)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    print(f"\n{'variant':10s}{'err/peak':>10s}{'SNR dB':>8s}{'s/audio s':>11s}{'speed vs ' + names[0]:>18s}")
    for name in names:
        med = statistics.median(times[name])
        peak_err, snr = errors[name]
        print(f"{name:10s}{peak_err:10.2e}{min(snr, 999):8.1f}{med / args.seconds:11.3f}{base / med:17.2f}x")
    print(f"(medians of {args.repeats}, interleaved; error against the float32 decode of the same tokens)")


if __name__ == "__main__":
    main()
