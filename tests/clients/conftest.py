"""Published clients against a real ``flashtts serve`` on 127.0.0.1 (tiny models).

Each module drives one client through its own package, as its framework drives it, and checks the
audio as that client reads it: the sample rate it labels the audio with, the length at that rate,
and the format. A module is skipped where its client is not installed; ``nox -s clients`` installs
them all.

``server`` is the tiny Spark model (every client); ``engine_server`` is parametrized over Spark, Orpheus and
MegaTTS3 (the realtime plugins: LiveKit's and Pipecat's Cartesia and ElevenLabs services speak through
each engine), with the voice to name and the length each segment must have.

The tiny models never stop by themselves, so every segment runs to its text's speaking-rate bound
(``flashtts_core.speaking_rate``): the length a client must see is known exactly (:func:`expected_seconds`).
A client that reads 16 kHz audio as 24 kHz sees two thirds of it, and the reverse one and a half times,
far outside the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import Server, start_server, torch_server_args

SPARK_TOKENS_PER_SECOND = 50  # BiCodec: 320 samples per semantic token at 16 kHz
ENGINES = ["spark", "orpheus", "mega"]


def expected_seconds(text: str, engine: str = "spark") -> float:
    """The audio a tiny ``engine`` model gives for one segment of ``text``: its speaking-rate bound, in the
    engine's own units.

    - Spark: whole 20 ms semantic tokens.
    - Orpheus: the bound in tokens (7 per 2048-sample frame at 24 kHz), whole frames of them, less the 3
      frames its first 4-frame decode window takes before the first chunk.
    - MegaTTS3: the duration model's frames (10 ms) scaled down to the bound, a multiple of 8 of them.
    """
    from flashtts_core.speaking_rate import max_speech_seconds

    bound = max_speech_seconds(text)
    if engine == "spark":
        return math.ceil(bound * SPARK_TOKENS_PER_SECOND) / SPARK_TOKENS_PER_SECOND
    if engine == "orpheus":
        from flashtts_orpheus import frames
        from flashtts_orpheus.engine import TOKENS_PER_SECOND

        whole_frames = math.ceil(bound * TOKENS_PER_SECOND) // frames.SLOTS
        return (whole_frames - (frames.WINDOW_FRAMES - 1)) * frames.SAMPLES_PER_FRAME / 24000
    if engine == "mega":
        from flashtts_mega.pipeline import FRAMES_MULTIPLE, MEL_FRAMES_PER_SECOND

        mel_frames = int(bound * 1.0 * MEL_FRAMES_PER_SECOND) // FRAMES_MULTIPLE * FRAMES_MULTIPLE
        return mel_frames / MEL_FRAMES_PER_SECOND
    raise ValueError(engine)


@pytest.fixture(scope="session")
def spoken_seconds() -> Callable[[str], float]:
    """``spoken_seconds(text)``: the seconds of audio a client must get for ``text`` (one segment, Spark)."""
    return expected_seconds


@pytest.fixture(scope="session")
def server(tiny_spark, tmp_path_factory) -> Server:
    """One server for every client: the tiny Spark model, OpenAI voice names mapped onto its voices."""
    tmp = tmp_path_factory.mktemp("clients")
    server = start_server(torch_server_args(tiny_spark, tmp, "--voice_alias", "alloy=female,nova=male"), tmp)
    yield server
    server.stop()


@dataclass
class EngineServer:
    """A server of one engine's tiny model, the voice a client names, and the length of a segment."""

    server: Server
    engine: str
    voice: str  # Spark: a built-in voice; Orpheus: a built-in voice; MegaTTS3: a role cloned from a reference

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def seconds(self, text: str) -> float:
        return expected_seconds(text, self.engine)

    @property
    def lead(self) -> float:
        """The most a sentence's first word may start after the sentence: 0 for estimated timings,
        MegaTTS3's leading 'sil' (at most 8 frames, 0.08 s) for its phone-duration timings."""
        return 0.08 if self.engine == "mega" else 0.0

    def starts_sentence(self, start: float, sentence_start: float) -> bool:
        """Whether a sentence's first word starts at the sentence's start, or at most ``lead`` after it."""
        return sentence_start - 2e-3 <= start <= sentence_start + self.lead + 2e-3


MEGA_ROLE = "alice"


def add_mega_role(server: Server, model: Path) -> None:
    """Clone the tiny model's example reference (audio + latent) into the saved role ``MEGA_ROLE``."""
    files = {
        "audio_file": ("example.wav", (model / "example.wav").read_bytes(), "audio/wav"),
        "latent_file": ("example.npy", (model / "example.npy").read_bytes(), "application/octet-stream"),
    }
    with server.client() as client:
        r = client.post("/add_speaker", data={"name": MEGA_ROLE, "overwrite": "true"}, files=files)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="session", params=ENGINES)
def engine_server(request, tmp_path_factory) -> EngineServer:
    """Each engine's tiny model behind a real server (Spark's is ``server``, shared with every client)."""
    engine = request.param
    if engine == "spark":
        yield EngineServer(request.getfixturevalue("server"), engine, "female")
        return
    model = request.getfixturevalue(f"tiny_{engine}")
    tmp = tmp_path_factory.mktemp(f"clients-{engine}")
    flags = ["--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu"]
    server = start_server(torch_server_args(model, tmp, *flags), tmp)
    try:
        if engine == "mega":
            add_mega_role(server, model)
        yield EngineServer(server, engine, "tara" if engine == "orpheus" else MEGA_ROLE)
    finally:
        server.stop()
