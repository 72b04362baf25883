"""The backends' own options (registered in plugin.py): declared here, not in flashtts-core."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from flashtts_core.options import PluginOptions, option


class TensorRTOptions(PluginOptions):
    """Options of the tensorrt-llm backend."""

    owner = "tensorrt-llm"

    llm_tensorrt_path: Optional[Path] = option(
        None,
        help="TensorRT-LLM engine directory (tensorrt-llm backend); default {model_path}/tensorrt-engine.",
    )

    def engine_dir(self, model_path: Optional[Path]) -> Optional[Path]:
        """``--llm_tensorrt_path``, else ``{model_path}/tensorrt-engine``."""
        if self.llm_tensorrt_path is not None:
            return Path(self.llm_tensorrt_path)
        return Path(model_path) / "tensorrt-engine" if model_path is not None else None
