"""The MegaTTS3 engine as plugin discovery sees it (registered by ``plugin``).

Nothing heavy is imported here (``flashtts plugins`` must stay fast): the description is
:class:`base.MegaEngineBase`; ``load`` imports the model code in ``pipeline`` and returns a
:class:`pipeline.MegaPipeline`, which does the work. The import is deferred for that reason only:
``pipeline`` does not import this module.
"""

from __future__ import annotations

from flashtts_core.engine import BackendFactory, Engine
from flashtts_core.options import EngineOptions

from .base import MegaEngineBase


class MegaEngine(MegaEngineBase):
    """MegaTTS3: clone a voice from a reference wav and its WaveVAE latent (``latent_file``)."""

    @classmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> Engine:
        from .pipeline import MegaPipeline

        return await MegaPipeline.load(options, create_backend)
