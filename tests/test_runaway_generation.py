"""Runaway generation: the tiny models never emit their stop token, like a real model looping on
silence. Through a real server (Spark here; Orpheus in test_orpheus_server.py), each segment is
bounded by its text's speaking-rate budget (flashtts_core.speaking_rate): always, a request's
max_tokens can only lower it, --speaking_rate_bound scales it (0: off, see test_operations.py), and a
cut is told in a response header, a log line and a metric."""

from __future__ import annotations

import io
import math

import httpx
import pytest
import soundfile as sf
from flashtts_core.speaking_rate import max_speech_seconds, segment_limit
from flashtts_server.audio_response import BOUND_CUT_HEADER

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


def test_the_limit_is_the_smallest_of_bound_request_and_ceiling():
    bound = math.ceil(max_speech_seconds("Hi.") * 50)
    assert segment_limit("Hi.", 50, 3000) == (bound, True)
    assert segment_limit("Hi.", 50, 3000, requested=32768) == (bound, True)  # max_tokens cannot raise it
    assert segment_limit("Hi.", 50, 3000, requested=10) == (10, False)
    assert segment_limit("Hi.", 50, 100) == (100, False)  # the engine's ceiling is lower still
    assert segment_limit("Hi.", 50, 3000, scale=2) == (math.ceil(2 * max_speech_seconds("Hi.") * 50), True)
    assert segment_limit("Hi.", 50, 3000, requested=5000, scale=0) == (5000, False)  # off: as the request says
    assert segment_limit("Hi.", 50, 3000, scale=0) == (3000, False)


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


def cuts(server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "flashtts_speaking_rate_bound_cuts")
    return family.samples[0].value


def test_spark_max_tokens_only_lowers_the_bound_and_a_cut_is_told(spark):
    bound = math.ceil(max_speech_seconds("Hi.") * SPARK_TOKENS_PER_SECOND)  # 125 tokens, 2.5 s
    before = cuts(spark)
    with spark.client() as client:
        # What LiveKit's FlashTTS plugin sends with every request: it must not switch the bound off.
        hi = {"name": "female", "text": "Hi.", "response_format": "wav"}
        huge = client.post("/speak", json={**hi, "max_tokens": 32768})
        lower = client.post("/speak", json={**hi, "max_tokens": 50})
        streamed = client.post("/speak", json={**hi, "name": "male", "max_tokens": 4096, "stream": True})
    assert huge.status_code == lower.status_code == streamed.status_code == 200, huge.text
    assert seconds_of(huge.content) == pytest.approx(bound * SPARK_SAMPLES_PER_TOKEN / 16000)
    assert seconds_of(huge.content) <= 3.0
    assert huge.headers[BOUND_CUT_HEADER] == "1"  # one segment, cut at its bound
    assert seconds_of(lower.content) == pytest.approx(50 * SPARK_SAMPLES_PER_TOKEN / 16000)
    assert BOUND_CUT_HEADER not in lower.headers  # max_tokens ended it, not the bound
    assert seconds_of(streamed.content) <= 3.0 and BOUND_CUT_HEADER not in streamed.headers  # headers went first
    assert cuts(spark) == before + 2  # the stream's cut is counted all the same
    assert "reached its speaking-rate bound" in spark.output()


def test_the_server_flag_scales_the_bound(tiny_spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runaway-scaled")
    flags = ["--role_dir", str(tmp / "roles"), "--speaking_rate_bound", "2"]
    server = start_server(["--model_path", str(tiny_spark), "--backend", "torch", *flags], tmp)
    try:
        with server.client() as client:
            r = client.post("/speak", json={"name": "female", "text": "Hi.", "response_format": "wav"})
        assert r.status_code == 200, r.text
        doubled = math.ceil(2 * max_speech_seconds("Hi.") * SPARK_TOKENS_PER_SECOND)
        assert seconds_of(r.content) == pytest.approx(doubled * SPARK_SAMPLES_PER_TOKEN / 16000)
        assert httpx.get(f"{server.url}/server_info").json()["limits"]["speaking_rate_bound"] == 2
    finally:
        server.stop()


def test_model_loading_logs_one_line_per_step(spark):
    """Off a terminal (the servers log to a file) each part loaded is one line: what, from where, device, dtype."""
    spark_log = spark.output()
    for step in ("[1/3]", "[2/3]", "[3/3]"):
        assert "loading Spark-TTS from " in spark_log and step in spark_log
    assert "BiCodec audio tokenizer (BiCodec/ + wav2vec2-large-xlsr-53/) on cpu, float32" in spark_log
    assert "LLM (LLM/) on torch, cpu, float32" in spark_log
