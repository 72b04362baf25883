"""MegaTTS3: recognised from its layout; inference is not implemented in this release."""

from __future__ import annotations

from pathlib import Path

from flashtts_core.engine import Capabilities, Engine
from flashtts_core.errors import ModelLoadError

SUBFOLDERS = ("aligner_lm", "diffusion_transformer", "duration_lm", "g2p", "wavvae")


class MegaEngine(Engine):
    name = "mega"
    description = "MegaTTS3 (24 kHz): G2P LLM + duration LM + DiT + WaveVAE"
    default_role_dir = "data/mega-roles"
    capabilities = Capabilities(clone=True, reference_text=False, latent=True, streaming=True)
    sample_rate = 24000

    @classmethod
    def detect(cls, path: Path) -> bool:
        return all((Path(path) / sub).is_dir() for sub in SUBFOLDERS)

    @classmethod
    async def load(cls, options, create_backend) -> "MegaEngine":
        raise ModelLoadError(
            f"{options.model_path} is a MegaTTS3 model; the MegaTTS3 engine is not available in this release yet"
        )

    def synthesize(self, request):  # pragma: no cover - never loaded
        raise NotImplementedError
