"""The OpenAI-compatible routes, through the official ``openai`` client and raw HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

SHORT = {"max_tokens": 60, "seed": 3}


@pytest.fixture(scope="module")
def client(spark_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{spark_server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_speech_create_returns_decodable_audio(client, audio_decoder):
    for fmt in ("mp3", "wav", "flac", "aac", "opus"):
        response = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hello from the client.", response_format=fmt, extra_body=SHORT
        )
        samples, rate = audio_decoder(response.content)
        # OpenAI's formats are 24 kHz (opus: 48 kHz, the codec's own), whatever the engine's rate.
        assert samples.size > 0 and rate == (48000 if fmt == "opus" else 24000), fmt


def test_default_format_is_mp3_and_pcm_is_24khz_as_openai_documents_it(client):
    response = client.audio.speech.create(model="tts-1", voice="female", input="Hi.", extra_body=SHORT)
    assert response.response.headers["content-type"] == "audio/mpeg"
    # Spark speaks at 16 kHz; OpenAI's pcm is 24 kHz 16-bit mono and clients play it as such.
    pcm = client.audio.speech.create(model="tts-1", voice="nova", input="Hi.", response_format="pcm", extra_body=SHORT)
    assert pcm.response.headers["x-sample-rate"] == "24000"
    assert abs(len(pcm.content) / 2 / 24000 - SHORT["max_tokens"] * 320 / 16000) < 0.05
    # A rate the request names wins: the engine's own 16 kHz, untouched.
    native = client.audio.speech.create(
        model="tts-1", voice="nova", input="Hi.", response_format="pcm", extra_body={**SHORT, "sample_rate": 16000}
    )
    assert native.response.headers["x-sample-rate"] == "16000"
    assert len(native.content) == SHORT["max_tokens"] * 320 * 2


def test_with_streaming_response_streams_chunks(client, audio_decoder):
    pieces = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="male",
        input="Streaming speech, chunk by chunk.",
        response_format="wav",
        extra_body={**SHORT, "max_tokens": 300},
    ) as response:
        assert response.headers["x-sample-rate"] == "24000"
        for chunk in response.iter_bytes():
            pieces.append(chunk)
    assert len(pieces) > 1  # really several chunks, not one body at the end
    samples, rate = audio_decoder(b"".join(pieces))
    assert rate == 24000 and abs(samples.size / rate - 300 * 320 / 16000) < 0.05


def test_sse_stream_sends_deltas_then_done_with_usage(client):
    events = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="female",
        input="Events arrive one by one.",
        response_format="pcm",
        stream_format="sse",
        extra_body={**SHORT, "max_tokens": 200},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) > 1 and events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) == 200 * 480 * 2  # 200 tokens of 20 ms, sent at 24 kHz
    usage = events[-1]["usage"]
    assert usage["input_tokens"] == len("Events arrive one by one.") and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_error_classes(client):
    with pytest.raises(openai.NotFoundError) as not_found:
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="x")
    assert not_found.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x", response_format="wma")
    assert "response_format" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="x", speed=9.0)
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="")


def test_a_wrong_voice_shape_or_a_blank_input_gets_one_clear_error(spark_server):
    with spark_server.client() as http:
        for voice in ({}, {"id": ""}, {"id": 5}, 5, ["female"]):
            r = http.post("/v1/audio/speech", json={"input": "Hi.", "voice": voice})
            error = r.json()["error"]
            assert r.status_code == 400 and error["param"] == "voice", r.text
            assert error["message"] == 'voice: must be a voice name or an object like {"id": "NAME"}'
        blank = http.post("/v1/audio/speech", json={"input": "  \n ", "voice": "female"})
        huge = http.post("/v1/audio/speech", json={"input": "Hi.", "voice": "no such voice! " * 50_000})
        padded = http.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"id": " female "}, **SHORT})
    assert blank.status_code == 400 and blank.json()["error"]["param"] == "input"
    assert padded.status_code == 200
    assert huge.status_code == 404 and len(huge.json()["error"]["message"]) < 500


def test_models_and_voices_lists(client, spark_server):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "spark" in ids
    assert client.models.retrieve("spark").id == "spark"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")
    voices = httpx.get(f"{spark_server.url}/v1/audio/voices").json()
    assert {"female", "male", "narrator"} <= set(voices["voices"])
    assert {v["type"] for v in voices["data"]} == {"role", "builtin"}


def test_voice_object_role_and_base64_clone(spark_server, reference_wav):
    with spark_server.client() as http:
        as_object = http.post(
            "/v1/audio/speech",
            json={"model": "x", "input": "Hi.", "voice": {"id": "narrator"}, "response_format": "pcm", **SHORT},
        )
        cloned = http.post(
            "/v1/audio/speech",
            json={
                "model": "x",
                "input": "Hi.",
                "voice": base64.b64encode(reference_wav).decode(),
                "reference_text": "a tone",
                "response_format": "pcm",
                **SHORT,
            },
        )
        data_uri = http.post(
            "/v1/audio/speech",
            json={
                "model": "x",
                "input": "Hi.",
                "voice": "data:audio/wav;base64," + base64.b64encode(reference_wav).decode(),
                "response_format": "pcm",
                **SHORT,
            },
        )
    assert as_object.status_code == 200 and cloned.status_code == 200 and data_uri.status_code == 200, cloned.text


def test_speed_is_mapped_onto_levels_and_instructions_are_accepted(spark_server):
    def speak(**fields) -> bytes:
        with spark_server.client() as http:
            r = http.post(
                "/v1/audio/speech",
                json={
                    "model": "x",
                    "input": "Same text.",
                    "voice": "female",
                    "response_format": "pcm",
                    **SHORT,
                    **fields,
                },
            )
        assert r.status_code == 200, r.text
        return r.content

    normal, again = speak(), speak()
    assert normal == again  # same seed, same request: same audio
    assert speak(speed=3.5) != normal  # a different speed label reaches the model
    assert speak(speed=0.25) != normal
    assert speak(instructions="Speak cheerfully.") == normal  # accepted; Spark has no use for it
