"""The MegaTTS3 engine as plugin discovery sees it: layout detection, capabilities, defaults.

Nothing heavy is imported here (``flashtts plugins`` must stay fast); ``load`` imports the model
code in ``pipeline`` and returns a :class:`pipeline.MegaPipeline`, which does the work.
"""

from __future__ import annotations

from pathlib import Path

from flashtts_core.engine import BackendFactory, Capabilities, Engine
from flashtts_core.options import EngineOptions
from flashtts_core.sampling import SamplingParams

SUBFOLDERS = ("aligner_lm", "diffusion_transformer", "duration_lm", "g2p", "wavvae")
SAMPLE_RATE = 24000


class MegaEngine(Engine):
    """MegaTTS3: clone a voice from a reference wav and its WaveVAE latent (``latent_file``)."""

    name = "mega"
    description = "MegaTTS3 (24 kHz): G2P LLM + duration LM + DiT + WaveVAE"
    default_role_dir = "data/mega-roles"
    capabilities = Capabilities(
        clone=True,
        reference_text=False,
        latent=True,
        named_voices=False,
        pitch_speed=False,
        speed=True,
        diffusion=True,
        multi_speaker=True,
        streaming=True,
    )
    sample_rate = SAMPLE_RATE
    voices: list[str] = []
    languages = ["en", "zh"]
    # The G2P is greedy (upstream's top_k=1); max_tokens caps its phones per segment (upstream 256).
    default_sampling = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, max_tokens=256)
    time_step, p_w, t_w = 32, 1.6, 2.5  # upstream infer_cli defaults

    # -- class-level ------------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        return all((Path(path) / sub).is_dir() for sub in SUBFOLDERS)

    @classmethod
    def write_tiny_model(cls, path: Path) -> None:
        """Every folder in upstream's layout with tiny random weights, plus example.wav / example.npy."""
        from .tiny_model import write_tiny_mega

        write_tiny_mega(Path(path))

    @classmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> "MegaEngine":
        from .pipeline import MegaPipeline

        return await MegaPipeline.load(options, create_backend)
