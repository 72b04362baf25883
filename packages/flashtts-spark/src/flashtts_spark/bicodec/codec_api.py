"""Loading a Spark-TTS model directory's codec parts and batched tokenize / detokenize."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from flashtts_core.loading import building_modules
from safetensors.torch import load_file

from .feature import SemanticFeatures, reference_clip, volume_normalize
from .model import BiCodec, length_mask

logger = logging.getLogger("flashtts.spark")

WAV2VEC2_DIR = "wav2vec2-large-xlsr-53"


def load_bicodec(bicodec_dir: Path, device: torch.device | str = "cpu") -> BiCodec:
    """BiCodec/config.yaml + BiCodec/model.safetensors, loaded strictly, weight norm folded."""
    bicodec_dir = Path(bicodec_dir)
    with open(bicodec_dir / "config.yaml") as f:
        config = yaml.safe_load(f)["audio_tokenizer"]
    with building_modules():  # not while an LLM's from_pretrained has changed the default dtype
        model = BiCodec.from_config(config)
    state_dict = load_file(bicodec_dir / "model.safetensors")
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{bicodec_dir / 'model.safetensors'} does not match BiCodec/config.yaml: "
            f"missing {result.missing_keys[:10]} (of {len(result.missing_keys)}), "
            f"unexpected {result.unexpected_keys[:10]} (of {len(result.unexpected_keys)})"
        )
    folded = model.remove_weight_norm()
    model.eval().to(device)
    logger.info(
        "BiCodec loaded from %s: %d tensors, %.1fM parameters, %d weight-norm layers folded, on %s, %s",
        bicodec_dir,
        len(state_dict),
        sum(p.numel() for p in model.parameters()) / 1e6,
        folded,
        device,
        next(model.parameters()).dtype,
    )
    return model


class BiCodecTokenizer:
    """Audio ⇄ (global tokens, semantic tokens) for a Spark-TTS model directory."""

    def __init__(
        self,
        config: dict,
        bicodec: BiCodec,
        features: SemanticFeatures,
        device: torch.device,
    ):
        self.config = config
        self.model = bicodec
        self.features = features
        self.device = device
        self.sample_rate = int(config["sample_rate"])

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        wav2vec_attn_implementation: str | None = None,
    ) -> BiCodecTokenizer:
        """Load config.yaml, BiCodec/ and wav2vec2-large-xlsr-53/ from a Spark-TTS model directory."""
        from transformers import Wav2Vec2Model

        start = time.perf_counter()
        model_dir = Path(model_dir)
        device = torch.device(device)
        with open(model_dir / "config.yaml") as f:
            config = yaml.safe_load(f)
        bicodec = load_bicodec(model_dir / "BiCodec", device)

        w2v_dir = model_dir / WAV2VEC2_DIR
        kwargs = {"attn_implementation": wav2vec_attn_implementation} if wav2vec_attn_implementation else {}
        with building_modules():
            wav2vec2 = Wav2Vec2Model.from_pretrained(w2v_dir, **kwargs)
        do_normalize = True
        preprocessor = w2v_dir / "preprocessor_config.json"
        if preprocessor.exists():
            do_normalize = bool(json.loads(preprocessor.read_text()).get("do_normalize", True))
        features = SemanticFeatures(wav2vec2, do_normalize=do_normalize).eval().to(device)
        logger.info(
            "wav2vec2 loaded from %s: %d of %d layers kept, attention %s, on %s, %s",
            w2v_dir,
            len(wav2vec2.encoder.layers),
            wav2vec2.config.num_hidden_layers,
            wav2vec2.config._attn_implementation,
            device,
            next(wav2vec2.parameters()).dtype,
        )
        logger.info("BiCodec tokenizer ready in %.2f s", time.perf_counter() - start)
        return cls(config, bicodec, features, device)

    @property
    def hop_length(self) -> int:
        """Output samples per semantic token."""
        return self.model.hop_length

    def _prepare(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"expected a non-empty mono waveform, got shape {wav.shape}")
        if self.config.get("volume_normalize", False):
            wav = volume_normalize(wav)
        return wav.astype(np.float32)

    @torch.inference_mode()
    def tokenize(self, wavs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Mono float32 clips at 16 kHz → [(global tokens (32,), semantic tokens (T,))] per clip.

        Volume normalisation is applied here when config.yaml asks for it, as upstream does on load.
        """
        wavs = [self._prepare(w) for w in wavs]
        refs = [
            reference_clip(
                w,
                self.sample_rate,
                self.config["ref_segment_duration"],
                self.config["latent_hop_length"],
            )
            for w in wavs
        ]
        too_short = [i for i, w in enumerate(wavs) if len(w) < 400]
        if too_short:
            raise ValueError(f"clips {too_short} are shorter than 400 samples, wav2vec2's first frame")
        features, frames = self.features(wavs, self.device)
        mask = length_mask(frames, features.shape[1])
        semantic = self.model.tokenize_semantic(features, mask).cpu().numpy()
        ref_batch = torch.from_numpy(np.stack(refs)).to(self.device)
        global_tokens = self.model.tokenize_global(ref_batch).reshape(len(wavs), -1).cpu().numpy()
        return [(global_tokens[i], semantic[i, : int(n)]) for i, n in enumerate(frames)]

    @torch.inference_mode()
    def detokenize(self, items: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """[(global tokens (32,), semantic tokens (T,))] → float32 waveforms of T · 320 samples."""
        lengths = [len(semantic) for _, semantic in items]
        if min(lengths) == 0:
            raise ValueError("cannot detokenize an empty semantic token sequence")
        semantic = torch.zeros(len(items), max(lengths), dtype=torch.long)
        for i, (_, tokens) in enumerate(items):
            semantic[i, : lengths[i]] = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        num_quantizers = self.model.speaker_encoder.quantizer.num_quantizers
        global_tokens = torch.stack(
            [torch.as_tensor(np.asarray(g), dtype=torch.long).reshape(-1, num_quantizers) for g, _ in items]
        )
        semantic = semantic.to(self.device)
        mask = length_mask(torch.tensor(lengths, device=self.device), semantic.shape[1])
        wav = self.model.detokenize(semantic, global_tokens.to(self.device), mask)[:, 0]
        wav = wav.float().cpu().numpy()
        return [wav[i, : n * self.hop_length].copy() for i, n in enumerate(lengths)]
