"""The BiCodec module tree, with the released checkpoint's parameter names."""

from __future__ import annotations

import torch
from flashtts_core.weight_norm import fold_weight_norms
from torch import nn

from .factorized_vq import FactorizedVectorQuantize
from .mel import MelSpectrogram
from .packed import PackedWaveGenerator
from .speaker_encoder import SpeakerEncoder
from .vocos import Decoder, Encoder
from .wave_generator import WaveGenerator


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor | None:
    """(B,) lengths → (B, 1, max_len) float mask, or None when no item is padded."""
    if bool((lengths == max_len).all()):
        return None
    steps = torch.arange(max_len, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).unsqueeze(1).float()


class BiCodec(nn.Module):
    """Semantic tokens (50 Hz, from wav2vec2 features) + global tokens (from a mel reference)."""

    def __init__(
        self,
        mel_params: dict,
        encoder: Encoder,
        decoder: WaveGenerator,
        quantizer: FactorizedVectorQuantize,
        speaker_encoder: SpeakerEncoder,
        prenet: Decoder,
        postnet: Decoder,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.quantizer = quantizer
        self.speaker_encoder = speaker_encoder
        self.prenet = prenet
        self.postnet = postnet  # training-only feature predictor, kept for the checkpoint
        self.mel_transformer = MelSpectrogram.from_config(mel_params)

    @classmethod
    def from_config(cls, config: dict) -> BiCodec:
        """`config` is the mapping under `audio_tokenizer:` in BiCodec/config.yaml."""
        return cls(
            mel_params=config["mel_params"],
            encoder=Encoder(**config["encoder"]),
            decoder=WaveGenerator(**config["decoder"]),
            quantizer=FactorizedVectorQuantize(**config["quantizer"]),
            speaker_encoder=SpeakerEncoder(**config["speaker_encoder"]),
            prenet=Decoder(**config["prenet"]),
            postnet=Decoder(**config["postnet"]),
        )

    @property
    def hop_length(self) -> int:
        return self.decoder.hop_length

    def remove_weight_norm(self) -> int:
        return fold_weight_norms(self)

    def pack_decoder(self) -> bool:
        """Decode through a :class:`PackedWaveGenerator` built from the (folded) wave generator, which
        it replaces: float32 arithmetic laid out for oneDNN on a CPU. Inference only: the state dict
        keys of the decoder change. False when already packed."""
        if not isinstance(self.decoder, WaveGenerator):
            return False
        self.decoder = PackedWaveGenerator(self.decoder)
        return True

    def tokenize_semantic(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wav2vec2 features (B, T, C) → (B, T) semantic tokens."""
        z = self.encoder(features.transpose(1, 2), mask=mask)
        return self.quantizer.tokenize(z)

    def tokenize_global(self, ref_wav: torch.Tensor) -> torch.Tensor:
        """Reference clips (B, samples), all of one length → (B, token_num, num_quantizers)."""
        return self.speaker_encoder.tokenize(self.mel_transformer(ref_wav))

    def detokenize(
        self,
        semantic_tokens: torch.Tensor,
        global_tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) semantic + (B, token_num, num_quantizers) global → (B, 1, T · hop_length) waveform."""
        # The FSQ codes come out in float32 whatever the weights' dtype: decode in the weights' dtype.
        dtype = next(self.decoder.parameters()).dtype
        z_q = self.quantizer.detokenize(semantic_tokens).to(dtype)
        d_vector = self.speaker_encoder.detokenize(global_tokens).to(dtype)
        if mask is not None:
            mask = mask.to(dtype)  # a float32 mask would promote every masked product back
        x = self.prenet(z_q, d_vector, mask=mask) + d_vector.unsqueeze(-1)
        return self.decoder(x, mask=mask)
