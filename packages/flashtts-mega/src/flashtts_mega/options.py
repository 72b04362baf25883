"""MegaTTS3's own options (registered in plugin.py): the DiT's sampling fields, set per request."""

from __future__ import annotations

from typing import Literal, Optional

from flashtts_core.options import PluginOptions, option

MAX_TIME_STEP = 128  # each step is a DiT forward at batch 3: more is a denial of service, not quality
MAX_WEIGHT = 20.0
WaveVAELayout = Literal["auto", "packed", "plain"]


class MegaOptions(PluginOptions):
    """Options of the mega engine. Request fields (None keeps the engine's default: 32 steps, p_w 1.6,
    t_w 2.5): ``time_step``: flow-matching steps; ``p_w``: guidance toward the text (intelligibility);
    ``t_w``: guidance toward the reference speaker (similarity). Server flag: ``--wavvae_decoder``."""

    owner = "mega"

    wavvae_decoder: WaveVAELayout = option(
        "auto",
        help="Layout of MegaTTS3's WaveVAE decoder: packed (channels-last convolutions, polyphase "
        "upsampling; the same arithmetic, sums in another order), plain (the module as loaded), "
        "auto (packed on a CPU).",
    )

    time_step: Optional[int] = option(
        None,
        scope="request",
        ge=1,
        le=MAX_TIME_STEP,
        title="DiT steps",
        help="MegaTTS3: flow-matching steps (default 32).",
    )
    p_w: Optional[float] = option(
        None,
        scope="request",
        ge=0,
        le=MAX_WEIGHT,
        title="Intelligibility (p_w)",
        help="MegaTTS3: intelligibility (text guidance) weight (default 1.6).",
    )
    t_w: Optional[float] = option(
        None,
        scope="request",
        ge=0,
        le=MAX_WEIGHT,
        title="Similarity (t_w)",
        help="MegaTTS3: similarity (speaker guidance) weight (default 2.5).",
    )
