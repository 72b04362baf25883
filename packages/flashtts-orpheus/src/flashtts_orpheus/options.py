"""Orpheus' own options (registered in plugin.py): server flags only, no request fields."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from flashtts_core.options import PluginOptions, option


class OrpheusOptions(PluginOptions):
    """Options of the orpheus engine (``--snac_path``, ``--lang``)."""

    owner = "orpheus"

    snac_path: Optional[Path] = option(None, help="Path to the Orpheus SNAC codec folder (default: MODEL/snac).")
    lang: Optional[str] = option(
        None, help="Orpheus language (english, french, german, korean, hindi, mandarin, spanish, italian)."
    )
