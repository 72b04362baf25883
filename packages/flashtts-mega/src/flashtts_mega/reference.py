"""A MegaTTS3 reference voice: the wav as the aligner sees it, and the client's latent, validated.

The WaveVAE encoder was never released, so the reference's latent comes from the client: a float32
``[1, T, 32]`` array at 25 Hz (one frame per 960 samples at 24 kHz), as upstream's ``.npy`` files
next to its example ``.wav`` files. Upstream slices it to the aligned reference's length
(``mel2ph`` frames // 4); a latent shorter than that cannot be sliced, so it is refused here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from flashtts_core.errors import InvalidRequest

LATENT_CHANNELS = 32
SAMPLES_PER_LATENT = 960  # 24 kHz / 25 Hz
MEL_FRAMES_PER_LATENT = 4  # upstream: vae_latent[:, :mel2ph.size(1) // 4]
PARAM = "latent_file"


def latent_frames_for(mel_frames: int) -> int:
    """Latent frames a reference with ``mel_frames`` aligned 10 ms frames uses."""
    return mel_frames // MEL_FRAMES_PER_LATENT


def example_latent_frames(padded_samples: int) -> int:
    """Enough latent frames for a padded reference of ``padded_samples`` (24 kHz), with one to spare."""
    return padded_samples // SAMPLES_PER_LATENT + 1


def check_latent(latent: Optional[np.ndarray], needed_frames: Optional[int] = None, who: str = "") -> np.ndarray:
    """The latent as float32 ``[1, T, 32]``, or a 400 naming ``latent_file`` that says what is wrong.

    With ``needed_frames`` the latent must have at least that many frames; it is cut to exactly that
    many (upstream's slice). ``who`` names the role it belongs to, for the message.
    """
    of = f" of role {who!r}" if who else ""
    if latent is None:
        raise InvalidRequest(
            f"MegaTTS3 needs the reference's latent{of}: send the .npy file (float32 [1, T, 32] at 25 Hz) "
            "as latent_file with the reference audio (the WaveVAE encoder that would compute it was never released)",
            param=PARAM,
        )
    array = np.asarray(latent)
    if array.dtype.kind != "f":
        raise InvalidRequest(
            f"latent_file{of} must hold floating-point values (float32), got {array.dtype}", param=PARAM
        )
    if array.ndim != 3 or array.shape[0] != 1 or array.shape[2] != LATENT_CHANNELS or array.shape[1] == 0:
        raise InvalidRequest(
            f"latent_file{of} must have shape [1, T, {LATENT_CHANNELS}] (T >= 1), got {list(array.shape)}", param=PARAM
        )
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise InvalidRequest(f"latent_file{of} contains NaN or infinite values", param=PARAM)
    if needed_frames is not None:
        if array.shape[1] < needed_frames:
            raise InvalidRequest(
                f"latent_file{of} has {array.shape[1]} frames but the reference audio needs {needed_frames} "
                f"(25 per second of audio plus 0.5 s of padding): is it the latent of this audio?",
                param=PARAM,
            )
        array = array[:, :needed_frames]
    return np.ascontiguousarray(array)
