"""Runaway generation: the tiny models never emit their stop token, like a real model looping on
silence. Through a real server (Spark here; Orpheus in test_orpheus_server.py), each segment is bounded by its text's speaking-rate budget
(flashtts_core.speaking_rate) unless the request sets max_tokens."""

from __future__ import annotations

import io
import math

import pytest
import soundfile as sf
from flashtts_core.speaking_rate import max_speech_seconds

from conftest import start_server

SPARK_TOKENS_PER_SECOND = 50  # BiCodec: 320 samples per semantic token at 16 kHz
SPARK_SAMPLES_PER_TOKEN = 320


def seconds_of(data: bytes) -> float:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return len(audio) / rate


@pytest.fixture(scope="module")
def spark(tiny_spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runaway-spark")
    server = start_server(
        ["--model_path", str(tiny_spark), "--backend", "torch", "--role_dir", str(tmp / "roles")], tmp
    )
    yield server
    server.stop()


def test_the_rule_is_generous_per_script_with_a_floor():
    assert max_speech_seconds("Hi.") == pytest.approx(2.5)  # 2 s floor + 2 letters + a pause
    assert max_speech_seconds("") == pytest.approx(2.0)
    # Ordinary English is ~14 characters a second (spaces included): the bound is well over twice as long.
    sentence = "The quick brown fox jumps over the lazy dog."
    assert max_speech_seconds(sentence) > 2.5 * len(sentence) / 14
    assert max_speech_seconds("你好世界") == pytest.approx(4.0)  # ideographs: 0.5 s each
    assert max_speech_seconds("2024") == max_speech_seconds("abcd") + 4 * 0.3  # digits are read out


def test_spark_hi_without_max_tokens_is_a_few_seconds(spark):
    with spark.client() as client:
        r = client.post("/speak", json={"name": "female", "text": "Hi.", "response_format": "wav"})
        assert r.status_code == 200, r.text
        expected_tokens = math.ceil(max_speech_seconds("Hi.") * SPARK_TOKENS_PER_SECOND)
        assert seconds_of(r.content) == pytest.approx(expected_tokens * SPARK_SAMPLES_PER_TOKEN / 16000)
        assert seconds_of(r.content) <= 3.0
        # OpenAI's route and a stream obey the same bound.
        r = client.post(
            "/v1/audio/speech",
            json={"model": "spark", "input": "Hi.", "voice": "male", "response_format": "wav", "stream": True},
        )
        assert r.status_code == 200 and seconds_of(r.content) <= 3.0
        # A longer text gets a longer budget; each segment its own.
        long_text = "This sentence is quite a lot longer than a greeting, so it may take a while."
        r = client.post("/speak", json={"name": "female", "text": long_text, "response_format": "wav"})
        assert 5.0 < seconds_of(r.content) <= max_speech_seconds(long_text) + 0.1


def test_spark_max_tokens_of_the_request_wins(spark):
    with spark.client() as client:
        r = client.post("/speak", json={"name": "female", "text": "Hi.", "response_format": "wav", "max_tokens": 200})
    assert r.status_code == 200, r.text
    assert seconds_of(r.content) == pytest.approx(200 * SPARK_SAMPLES_PER_TOKEN / 16000)


def test_model_loading_logs_one_line_per_step(spark):
    """Off a terminal (the servers log to a file) each part loaded is one line: what, from where, device, dtype."""
    spark_log = spark.output()
    for step in ("[1/3]", "[2/3]", "[3/3]"):
        assert "loading Spark-TTS from " in spark_log and step in spark_log
    assert "BiCodec audio tokenizer (BiCodec/ + wav2vec2-large-xlsr-53/) on cpu, float32" in spark_log
    assert "LLM (LLM/) on torch, cpu, float32" in spark_log
