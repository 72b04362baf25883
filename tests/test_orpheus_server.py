"""Orpheus end to end through a real `flashtts serve` (tiny model, every installed backend) and the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import Server, installed_backends, start_server, with_gguf

SAMPLES_PER_FRAME = 2048  # SNAC hop 512 x stride 4: one 7-id Orpheus frame
FRAMES = 10
MAX_TOKENS = 7 * FRAMES  # the tiny LLM never stops early
CHUNK_SAMPLES = (FRAMES - 3) * SAMPLES_PER_FRAME  # first audio at frame 4, then one frame each


@pytest.fixture(scope="module", params=installed_backends())
def server(request, tiny_orpheus, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp(f"orpheus-server-{request.param}")
    model = with_gguf(tiny_orpheus, tmp / "model") if request.param == "llama-cpp" else tiny_orpheus
    args = [
        "--model_path",
        str(model),
        "--backend",
        request.param,
        "--llm_device",
        "cpu",
        "--detokenizer_device",
        "cpu",
        "--batch_size",
        "4",
        "--role_dir",
        str(tmp / "roles"),
    ]
    srv = start_server(args, tmp)
    yield srv
    srv.stop()


def wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def test_server_reports_the_orpheus_engine_and_voices(server):
    with server.client() as client:
        info = client.get("/server_info").json()
        voices = client.get("/v1/audio/voices").json()
    assert info["engine"] == "orpheus" and info["sample_rate"] == 24000
    assert info["voices"][:8] == ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]
    assert info["capabilities"]["clone"] is False and info["capabilities"]["pitch_speed"] is False
    assert "tara" in voices["voices"]


def test_speak_with_a_builtin_voice_gives_24khz_wav(server):
    with server.client() as client:
        r = client.post(
            "/speak",
            json={"name": "tara", "text": "Hello <laugh> there.", "response_format": "wav", "max_tokens": MAX_TOKENS},
        )
    assert r.status_code == 200, r.text
    audio, rate = wav(r.content)
    assert rate == 24000 and r.headers["x-sample-rate"] == "24000"
    assert audio.shape == (CHUNK_SAMPLES,) and np.abs(audio).max() > 0


@pytest.mark.parametrize("voice", ["tara", {"id": "leo"}, "alloy"])
def test_openai_speech_with_a_voice(server, voice):
    body = {
        "model": "orpheus",
        "input": "Hi there.",
        "voice": voice,
        "response_format": "pcm",
        "stream": False,
        "max_tokens": MAX_TOKENS,
    }
    with server.client() as client:
        r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-sample-rate"] == "24000"
    assert len(r.content) == CHUNK_SAMPLES * 2  # 16-bit mono


def test_multi_speak_with_two_builtin_voices(server):
    with server.client() as client:
        r = client.post(
            "/multi_speak",
            json={"text": "<role:tara> Hi. <role:dan> Hello!", "response_format": "wav", "max_tokens": MAX_TOKENS},
        )
    assert r.status_code == 200, r.text
    audio, rate = wav(r.content)
    assert rate == 24000 and len(audio) > 2 * CHUNK_SAMPLES  # two segments and a pause between


def test_without_max_tokens_a_segment_is_bounded_by_its_text(server):
    """The tiny LLM never stops: "Hi." must still be a few seconds (flashtts_core.speaking_rate)."""
    with server.client() as client:
        r = client.post("/speak", json={"name": "tara", "text": "Hi.", "response_format": "wav"})
    assert r.status_code == 200, r.text
    audio, rate = wav(r.content)
    assert 1.0 < len(audio) / rate <= 3.0


def test_model_loading_logs_one_line_per_step(server):
    log = server.output()  # not a terminal: one line per part loaded (what, from where, device, dtype)
    assert "loading Orpheus from " in log and "[1/3] SNAC decoder from " in log and "on cpu, float32" in log
    assert "[2/3] text tokenizer (" in log and "[3/3] LLM on " in log


def test_unknown_voice_is_404(server):
    with server.client() as client:
        r = client.post("/speak", json={"name": "nobody", "text": "Hi.", "max_tokens": MAX_TOKENS})
        o = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "nobody", "max_tokens": MAX_TOKENS})
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    assert o.status_code == 404


def test_pitch_and_speed_are_400(server):
    with server.client() as client:
        pitch = client.post("/speak", json={"name": "tara", "text": "Hi.", "pitch": "high", "max_tokens": MAX_TOKENS})
        speed = client.post("/speak", json={"name": "tara", "text": "Hi.", "speed": "low", "max_tokens": MAX_TOKENS})
    assert pitch.status_code == 400 and speed.status_code == 400
    assert "pitch" in pitch.json()["error"]["message"]


def test_clone_voice_is_a_clear_4xx(server):
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(np.arange(24000) / 10).astype(np.float32), 24000, format="WAV")
    with server.client() as client:
        r = client.post(
            "/clone_voice",
            data={"text": "Hi."},
            files={"reference_audio_file": ("ref.wav", buf.getvalue(), "audio/wav")},
        )
    assert 400 <= r.status_code < 500, r.text
    assert "clon" in r.json()["error"]["message"]


def test_stream_first_chunk_arrives_after_four_frames(server):
    frames = 30
    body = {
        "name": "mia",
        "text": "A longer stream.",
        "response_format": "pcm",
        "stream": True,
        "max_tokens": 7 * frames,
    }
    start = time.perf_counter()
    first_byte = None
    received = 0
    with server.client() as client, client.stream("POST", "/speak", json=body) as r:
        assert r.status_code == 200
        for piece in r.iter_bytes():
            if piece and first_byte is None:
                first_byte = time.perf_counter() - start
            received += len(piece)
    total = time.perf_counter() - start
    assert received == (frames - 3) * SAMPLES_PER_FRAME * 2
    print(f"orpheus tiny stream: first byte {first_byte:.2f} s, total {total:.2f} s for {frames} frames")
    # Audio starts after 4 of 30 frames: far earlier than the end of generation.
    assert first_byte < total * 0.5


def test_cli_tiny_model_then_infer_writes_24khz_wav(tmp_path):
    model = tmp_path / "orpheus-tiny"
    out = tmp_path / "out.wav"
    cli = [sys.executable, "-m", "flashtts_server.cli"]
    made = subprocess.run(
        [*cli, "tiny-model", "orpheus", str(model)], check=True, capture_output=True, text=True, timeout=300
    )
    assert f"tiny Orpheus in {model} [3/3] snac/" in made.stderr  # one log line per step off a terminal
    done = subprocess.run(
        [
            *cli,
            "infer",
            "--model_path",
            str(model),
            "--backend",
            "torch",
            "--name",
            "tara",
            "-i",
            "hi",
            "-o",
            str(out),
            "--max_tokens",
            str(MAX_TOKENS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    audio, rate = sf.read(out)
    assert rate == 24000 and len(audio) == CHUNK_SAMPLES
    wrong = subprocess.run(
        [
            *cli,
            "infer",
            "--model_path",
            str(model),
            "--backend",
            "torch",
            "--lang",
            "french",
            "--name",
            "tara",
            "-i",
            "salut",
            "-o",
            str(tmp_path / "fr.wav"),
            "--max_tokens",
            str(MAX_TOKENS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2 and "pierre" in wrong.stderr
