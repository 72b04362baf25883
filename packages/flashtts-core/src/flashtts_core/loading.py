"""One lock for building torch modules, held by everything that builds them while loading.

transformers' ``from_pretrained`` sets torch's default dtype, which is process-wide, while it
builds a model (to bfloat16 for a bfloat16 LLM), and restores it afterwards. Engines load their
codecs in worker threads at the same time as the LLM; a module built in that window gets
bfloat16 parameters and buffers, and float32 weights loaded into it are rounded without a word
(seen as a 500 on the first clone request: a float32 input met a bfloat16 bias, now and then).
Two overlapping ``from_pretrained`` calls can even leave the wrong default behind for good.

So an LLM backend calls ``from_pretrained`` inside :func:`building_modules`, and an engine builds
its own modules (and calls ``from_pretrained`` for codecs) inside it too. Only construction is
serialised; reading weights from disk and moving them to a device may overlap.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

MODULE_BUILD_LOCK = threading.RLock()


@contextmanager
def building_modules() -> Iterator[None]:
    """Build torch modules with torch's default dtype as this process set it (float32)."""
    with MODULE_BUILD_LOCK:
        yield
