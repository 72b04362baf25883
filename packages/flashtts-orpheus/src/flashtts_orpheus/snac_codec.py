"""SNAC (hubertsiuzdak/snac) as a FlashTTS audio codec, loaded from a local folder only.

The folder is the ``snac_24khz`` release layout: ``config.json`` (the constructor arguments of
``snac.SNAC``) and ``pytorch_model.bin`` (its state dict). ``snac`` and ``torch`` are imported when a
codec is loaded, never when this module is imported.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from flashtts_core.codec import AudioCodec
from flashtts_core.errors import ModelLoadError
from flashtts_core.loading import building_modules

logger = logging.getLogger("flashtts.orpheus")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"


def is_snac_folder(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / WEIGHTS_FILE).is_file()


class SnacCodec(AudioCodec):
    """Decodes SNAC codes to audio, batched.

    One item is SNAC's own layout: a list of one int array per codebook, coarse to fine (for the 24 kHz
    model: T, 2T and 4T codes). Items of the same shape are decoded as one batch; others in their own.
    """

    name = "snac"
    sample_rate = 24000

    def __init__(self, model, device: str, path: Path):
        self.model = model
        self.device = device
        self.path = path
        self.sample_rate = int(model.sampling_rate)
        self.hop_length = int(model.hop_length)
        self.vq_strides = tuple(int(s) for s in model.vq_strides)

    @classmethod
    def load(cls, path, device: str = "cpu", **options: Any) -> "SnacCodec":
        """Build ``snac.SNAC`` from ``config.json`` and load ``pytorch_model.bin`` strictly (no hub access)."""
        import torch
        from snac import SNAC

        path = Path(path)
        if not is_snac_folder(path):
            raise ModelLoadError(
                f"no SNAC codec in {str(path)!r}: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(the snac_24khz release; put it in MODEL/snac or pass --snac_path)"
            )
        start = time.perf_counter()
        config = json.loads((path / CONFIG_FILE).read_text())
        with building_modules():  # not while an LLM's from_pretrained has changed the default dtype
            model = SNAC(**config)
        # weights_only: a pickle from disk must not run code.
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ModelLoadError(
                f"SNAC weights in {path} do not match its config: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        model.to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        logger.info(
            "SNAC codec: loaded %s (%.1fM parameters, %d Hz, hop %d) on %s as float32 in %.2f s",
            path,
            params / 1e6,
            model.sampling_rate,
            model.hop_length,
            device,
            time.perf_counter() - start,
        )
        return cls(model, device, path)

    def decode(self, tokens: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """Codes (one list of per-codebook arrays per item) to float32 mono audio, one array per item."""
        import torch

        out: list[np.ndarray | None] = [None] * len(tokens)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, codes in enumerate(tokens):
            groups.setdefault(tuple(len(c) for c in codes), []).append(index)
        with torch.inference_mode():
            for indices in groups.values():
                codebooks = [
                    torch.as_tensor(
                        np.stack([np.asarray(tokens[i][level]) for i in indices]), dtype=torch.long, device=self.device
                    )
                    for level in range(len(tokens[indices[0]]))
                ]
                audio = self.model.decode(codebooks)  # (batch, 1, samples)
                audio = audio[:, 0].float().cpu().numpy()
                for row, i in enumerate(indices):
                    out[i] = np.ascontiguousarray(audio[row], dtype=np.float32)
        return out  # type: ignore[return-value]
