"""BiCodec as a registered :class:`flashtts_core.codec.AudioCodec` (light: torch is imported on load)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from flashtts_core.codec import AudioCodec

logger = logging.getLogger("flashtts.spark")

SpeakerTokens = tuple[np.ndarray, np.ndarray]  # (global tokens (32,), semantic tokens (T,))


class BiCodecCodec(AudioCodec):
    """Spark-TTS's BiCodec, 16 kHz: audio ⇄ (32 global tokens, 50 Hz semantic tokens).

    ``load(model_dir, device, wav2vec_attn_implementation=..., encoder=True)`` reads a Spark-TTS
    model directory (config.yaml, BiCodec/, wav2vec2-large-xlsr-53/). With ``encoder=False`` only
    BiCodec is loaded: enough to decode, and it spares the 300M-parameter wav2vec2 on a device that
    only detokenizes.
    """

    name = "bicodec"
    sample_rate = 16000
    hop_length = 320  # output samples per semantic token (50 Hz)

    def __init__(self, tokenizer: Any, can_encode: bool):
        self._tokenizer = tokenizer
        self.can_encode = can_encode
        self.decoder_dtype = "float32"
        self.hop_length = int(tokenizer.hop_length)

    @classmethod
    def load(cls, path, device: str = "cpu", **options: Any) -> "BiCodecCodec":
        import yaml

        from .bicodec import BiCodecTokenizer, load_bicodec

        model_dir = Path(path)
        if options.get("encoder", True):
            tokenizer = BiCodecTokenizer.load(
                model_dir, device=device, wav2vec_attn_implementation=options.get("wav2vec_attn_implementation")
            )
            return cls(tokenizer, can_encode=True)
        import torch

        with open(model_dir / "config.yaml") as fh:
            config = yaml.safe_load(fh)
        bicodec = load_bicodec(model_dir / "BiCodec", device)
        logger.info("BiCodec decoder only on %s (no wav2vec2 needed to detokenize)", device)
        return cls(BiCodecTokenizer(config, bicodec, None, torch.device(device)), can_encode=False)

    def set_decoder_dtype(self, dtype: str) -> None:
        """Decode in ``float32`` (the default) or ``bfloat16``: only the decode path (prenet and
        wave decoder, nearly all of the decode time) changes; the tokenizer side stays float32.
        Set it once, at load: casting to bfloat16 rounds the weights for good."""
        import torch

        model = self._tokenizer.model
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        model.prenet.to(torch_dtype)
        model.decoder.to(torch_dtype)
        self.decoder_dtype = dtype

    def pack_decoder(self) -> None:
        """Decode through BiCodec's packed wave generator (channels-last convolutions, the upsampling
        as polyphase convolutions): the float32 model's arithmetic in another order, faster on a CPU."""
        if self._tokenizer.model.pack_decoder():
            logger.info("BiCodec decoder packed for the CPU (channels-last, polyphase upsampling)")

    def encode(self, wavs: Sequence[np.ndarray]) -> list[SpeakerTokens]:
        """16 kHz float32 mono clips → (global tokens, semantic tokens) per clip."""
        if not self.can_encode:
            raise RuntimeError("this BiCodec was loaded without its wav2vec2 encoder")
        return [
            (np.asarray(g, dtype=np.int64), np.asarray(s, dtype=np.int64))
            for g, s in self._tokenizer.tokenize(list(wavs))
        ]

    def decode(self, tokens: Sequence[SpeakerTokens]) -> list[np.ndarray]:
        """(global tokens (32,), semantic tokens (T,)) pairs → float32 audio of T x 320 samples each."""
        return [np.asarray(w, dtype=np.float32) for w in self._tokenizer.detokenize(list(tokens))]
