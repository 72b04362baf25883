"""Inputs of BiCodec tokenization: volume normalisation, the speaker reference clip, and wav2vec2
semantic features (mean of hidden states 11, 14 and 16), computed for a padded batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SEMANTIC_LAYERS = (11, 14, 16)


def volume_normalize(audio: np.ndarray, coeff: float = 0.2) -> np.ndarray:
    """Upstream's percentile loudness normalisation: scale so the mean of the 90th–99th percentile of
    |samples| above 0.01 becomes `coeff` (gain clamped to [0.1, 10]), then keep the peak ≤ 1."""
    audio = np.asarray(audio, dtype=np.float64)
    magnitudes = np.sort(np.abs(audio))
    if magnitudes[-1] < 0.1:
        audio = audio / max(magnitudes[-1], 1e-3) * 0.1
    # As upstream, the percentiles come from the magnitudes before the quiet-audio boost above.
    magnitudes = magnitudes[magnitudes > 0.01]
    n = magnitudes.shape[0]
    if n <= 10:
        return audio
    volume = np.mean(magnitudes[int(0.9 * n) : int(0.99 * n)])
    audio = audio * np.clip(coeff / volume, 0.1, 10)
    peak = np.max(np.abs(audio))
    return audio / peak if peak > 1 else audio


def reference_clip(wav: np.ndarray, sample_rate: int, duration: float, hop_length: int) -> np.ndarray:
    """The first `duration` seconds, floored to a multiple of `hop_length`; short clips are tiled."""
    length = int(sample_rate * duration) // hop_length * hop_length
    if len(wav) < length:
        wav = np.tile(wav, length // len(wav) + 1)
    return wav[:length]


def wav2vec2_frames(num_samples: int, kernels: list[int], strides: list[int]) -> int:
    """Frames the wav2vec2 conv feature extractor (no padding) yields for `num_samples` samples."""
    n = num_samples
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    return max(n, 0)


class SemanticFeatures(nn.Module):
    """Wraps a transformers Wav2Vec2Model; layers past the last one needed are dropped at load time."""

    def __init__(self, wav2vec2: nn.Module, do_normalize: bool = True):
        super().__init__()
        self.wav2vec2 = wav2vec2
        self.do_normalize = do_normalize
        config = wav2vec2.config
        self.kernels = list(config.conv_kernel)
        self.strides = list(config.conv_stride)
        needed = max(SEMANTIC_LAYERS)
        if config.num_hidden_layers < needed:
            raise ValueError(f"wav2vec2 has {config.num_hidden_layers} layers, BiCodec needs {needed}")
        encoder = wav2vec2.encoder
        if len(encoder.layers) > needed:
            # hidden_states[16] is the output of layer 15; with a stable-layer-norm encoder the final
            # LayerNorm would only touch the last entry, so it must go with the dropped layers.
            encoder.layers = encoder.layers[:needed]
            if getattr(config, "do_stable_layer_norm", False):
                encoder.layer_norm = nn.Identity()

    def normalize(self, wav: np.ndarray) -> np.ndarray:
        """Wav2Vec2FeatureExtractor's zero-mean unit-variance normalisation of one clip."""
        wav = np.asarray(wav, dtype=np.float32)
        if not self.do_normalize:
            return wav
        return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)

    def forward(self, wavs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips → (B, T_max, hidden) features and (B,) valid frame counts."""
        lengths = [len(w) for w in wavs]
        batch = torch.zeros(len(wavs), max(lengths))
        attention = torch.zeros(len(wavs), max(lengths), dtype=torch.long)
        for i, wav in enumerate(wavs):
            batch[i, : lengths[i]] = torch.from_numpy(self.normalize(wav))
            attention[i, : lengths[i]] = 1
        padded = min(lengths) != max(lengths)
        param = next(self.wav2vec2.parameters())
        out = self.wav2vec2(
            batch.to(device=device, dtype=param.dtype),
            attention_mask=attention.to(device) if padded else None,
            output_hidden_states=True,
        )
        hidden = out.hidden_states
        features = sum(hidden[i] for i in SEMANTIC_LAYERS) / len(SEMANTIC_LAYERS)
        frames = torch.tensor(
            [wav2vec2_frames(n, self.kernels, self.strides) for n in lengths],
            device=device,
        )
        return features.float(), frames
