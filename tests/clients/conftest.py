"""Published clients against a real ``flashtts serve`` on 127.0.0.1 (the tiny Spark model).

Each module drives one client through its own package, as its framework drives it, and checks the
audio as that client reads it: the sample rate it labels the audio with, the length at that rate,
and the format. A module is skipped where its client is not installed; ``nox -s clients`` installs
them all.

The tiny model never emits its stop token, so every segment runs to its text's speaking-rate bound:
the length a client must see is known exactly (:func:`expected_seconds`). A client that reads 16 kHz
audio as 24 kHz sees two thirds of it, and the reverse one and a half times, far outside the tolerance.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest

from conftest import Server, start_server, torch_server_args

SPARK_TOKENS_PER_SECOND = 50  # BiCodec: 320 samples per semantic token at 16 kHz


def expected_seconds(text: str) -> float:
    """The audio the tiny Spark model gives for one segment of ``text``: its speaking-rate bound, in
    whole 20 ms tokens."""
    from flashtts_core.speaking_rate import max_speech_seconds

    return math.ceil(max_speech_seconds(text) * SPARK_TOKENS_PER_SECOND) / SPARK_TOKENS_PER_SECOND


@pytest.fixture(scope="session")
def spoken_seconds() -> Callable[[str], float]:
    """``spoken_seconds(text)``: the seconds of audio a client must get for ``text`` (one segment)."""
    return expected_seconds


@pytest.fixture(scope="session")
def server(tiny_spark, tmp_path_factory) -> Server:
    """One server for every client: the tiny Spark model, OpenAI voice names mapped onto its voices."""
    tmp = tmp_path_factory.mktemp("clients")
    server = start_server(torch_server_args(tiny_spark, tmp, "--voice_alias", "alloy=female,nova=male"), tmp)
    yield server
    server.stop()
