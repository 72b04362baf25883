"""What MegaTTS3 is, as plugin discovery sees it: name, capabilities, defaults, layout detection.

Nothing heavy is imported here (``flashtts plugins`` must stay fast). Two classes build on it: the
registered :class:`engine.MegaEngine`, whose ``load`` imports the model code, and the loaded
:class:`pipeline.MegaPipeline`, which does the work (and never imports ``engine``).
"""

from __future__ import annotations

from pathlib import Path

from flashtts_core.engine import Capabilities, Engine
from flashtts_core.sampling import SamplingParams

from .layout import SAMPLE_RATE, SUBFOLDERS


class MegaEngineBase(Engine):
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
