"""MegaTTS3's model folder as released (see ``tiny_model`` for what each sub-folder holds) and its output rate.

Light on purpose: plugin discovery reads it (``MegaEngine.detect``), as does the loaded pipeline.
"""

from __future__ import annotations

SUBFOLDERS = ("aligner_lm", "diffusion_transformer", "duration_lm", "g2p", "wavvae")
SAMPLE_RATE = 24000  # the WaveVAE's output rate (and the rate references are read at)
