"""The native routes (/speak, /clone_voice, /multi_speak, roles, /server_info) through a real server."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
SHORT = {"max_tokens": 60, "seed": 1}  # 60 semantic tokens ≈ 1.2 s at 16 kHz


def _duration(data: bytes, fmt: str, decoder, expected_rate: int) -> float:
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return len(data) / 2 / expected_rate
    samples, rate = decoder(data)
    # Opus always decodes at 48 kHz (the codec's rate); the others keep the rate the server reported.
    assert rate == (48000 if fmt == "opus" else expected_rate), fmt
    return samples.size / rate


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_speak_every_format_decodes_at_the_reported_rate(spark_server, audio_decoder, fmt, stream):
    with spark_server.client() as client:
        r = client.post(
            "/speak", json={"name": "female", "text": "Hello there.", "response_format": fmt, "stream": stream, **SHORT}
        )
    assert r.status_code == 200, r.text
    rate = int(r.headers["x-sample-rate"])
    assert rate == 16000
    assert r.headers["content-type"].startswith("audio/")
    assert 0.5 < _duration(r.content, fmt, audio_decoder, rate) < 3.0


def test_streamed_wav_carries_open_ended_sizes_and_whole_wav_exact_ones(spark_server):
    with spark_server.client() as client:
        streamed = client.post(
            "/speak", json={"name": "male", "text": "Hi.", "response_format": "wav", "stream": True, **SHORT}
        )
        whole = client.post("/speak", json={"name": "male", "text": "Hi.", "response_format": "wav", **SHORT})
    assert streamed.content[4:8] == b"\xff\xff\xff\xff" and streamed.content[40:44] == b"\xff\xff\xff\xff"
    assert int.from_bytes(whole.content[40:44], "little") == len(whole.content) - 44


@pytest.mark.parametrize("rate", [24000, 8000, 44100])
def test_pcm_and_wav_are_resampled_to_the_requested_rate(spark_server, audio_decoder, rate):
    with spark_server.client() as client:
        pcm = client.post(
            "/speak", json={"name": "female", "text": "Hi.", "response_format": "pcm", "sample_rate": rate, **SHORT}
        )
        wav = client.post(
            "/speak",
            json={
                "name": "female",
                "text": "Hi.",
                "response_format": "wav",
                "sample_rate": rate,
                "stream": True,
                **SHORT,
            },
        )
    assert pcm.status_code == 200 and int(pcm.headers["x-sample-rate"]) == rate
    native = SHORT["max_tokens"] * 320 / 16000  # seconds of audio from 60 tokens
    assert abs(len(pcm.content) / 2 / rate - native) < 0.05
    samples, decoded_rate = audio_decoder(wav.content)
    assert decoded_rate == rate and abs(samples.size / rate - native) < 0.05


def test_speak_refuses_bad_values_in_the_error_shape(spark_server):
    cases = [
        ({"name": "female", "text": "x", "response_format": "ogg-vorbis"}, 400, "response_format"),
        ({"name": "female", "text": "x", "pitch": "sky_high"}, 400, "pitch"),
        ({"name": "female", "text": "x", "temperature": -1}, 400, "temperature"),
        ({"name": "female", "text": "x", "top_p": 0}, 400, "top_p"),
        ({"name": "female", "text": "x", "sample_rate": 100}, 400, "sample_rate"),
        ({"name": "female", "text": ""}, 400, "text"),
        ({"name": "nobody", "text": "x"}, 404, "name"),
        ({"text": "x"}, 400, "name"),
        ({"name": "   ", "text": "x"}, 400, "name"),
        ({"name": "female", "text": " \n\t "}, 400, "text"),
    ]
    with spark_server.client() as client:
        for body, status, param in cases:
            r = client.post("/speak", json=body)
            assert r.status_code == status, (body, r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
            assert error["message"]
        broken = client.post("/speak", content=b"{not json", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
        for body in (b"", b"[1]", b'"female"'):
            r = client.post("/speak", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]["message"], r.text
        for body in (b'{"name": "female", "text": "\xff"}', b'{"top_k": ' + b"9" * 5000 + b"}", b"[" * 100_000):
            r = client.post("/speak", content=body, headers={"content-type": "application/json"})
            error = r.json()["error"]
            assert r.status_code == 400 and error["code"] == "invalid_body" and "UTF-8 JSON" in error["message"]
        form = client.post("/speak", data={"name": "female", "text": "x"})
        assert form.status_code == 400 and "must be a JSON object" in form.json()["error"]["message"]


def test_levels_are_case_insensitive_and_form_numbers_must_be_finite(spark_server, reference_wav):
    with spark_server.client() as client:
        spoken = client.post(
            "/speak", json={"name": "female", "text": "Hi.", "pitch": " HIGH ", "speed": "Low", **SHORT}
        )
        cloned = client.post(
            "/clone_voice",
            data={"text": "Hi.", "pitch": "VERY_LOW", "max_tokens": "10"},
            files={"reference_audio_file": ("a.wav", reference_wav)},
        )
        for field, value in (("temperature", "nan"), ("top_p", "inf"), ("repetition_penalty", "-Infinity")):
            r = client.post(
                "/clone_voice",
                data={"text": "Hi.", field: value},
                files={"reference_audio_file": ("a.wav", reference_wav)},
            )
            error = r.json()["error"]
            assert r.status_code == 400 and error["param"] == field and "finite" in error["message"], r.text
    assert spoken.status_code == 200 and cloned.status_code == 200, (spoken.text, cloned.text)


def test_pitch_and_speed_levels_are_accepted(spark_server):
    with spark_server.client() as client:
        r = client.post(
            "/v1/speak",
            json={
                "name": "male",
                "text": "Hi.",
                "pitch": "very_high",
                "speed": "low",
                "response_format": "pcm",
                **SHORT,
            },
        )
    assert r.status_code == 200 and len(r.content) > 0


def test_clone_voice_from_upload_and_from_base64(spark_server, reference_wav, audio_decoder):
    with spark_server.client() as client:
        upload = client.post(
            "/clone_voice",
            data={"text": "Cloned speech.", "reference_text": "a reference", "response_format": "wav", **SHORT},
            files={"reference_audio_file": ("ref.wav", reference_wav, "audio/wav")},
        )
        b64 = client.post(
            "/v1/clone_voice",
            data={
                "text": "Cloned speech.",
                "reference_audio": base64.b64encode(reference_wav).decode(),
                "response_format": "mp3",
                "stream": "true",
                **SHORT,
            },
        )
    assert upload.status_code == 200, upload.text
    samples, rate = audio_decoder(upload.content)
    assert rate == 16000 and samples.size > 0
    assert b64.status_code == 200, b64.text
    assert audio_decoder(b64.content)[0].size > 0


def test_clone_voice_refuses_bad_reference_audio(spark_server):
    with spark_server.client() as client:
        missing = client.post("/clone_voice", data={"text": "x"})
        garbage = client.post(
            "/clone_voice", data={"text": "x"}, files={"reference_audio_file": ("a.wav", b"RIFF" + b"\0" * 300)}
        )
        not_b64 = client.post("/clone_voice", data={"text": "x", "reference_audio": "this is not audio"})
        file_url = client.post("/clone_voice", data={"text": "x", "reference_audio": "file:///etc/passwd"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "reference_audio"
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_audio"
    assert not_b64.status_code == 400
    assert file_url.status_code == 400


def test_multi_speak_voices_each_segment_and_pauses_between_speakers(spark_server, audio_decoder):
    text = "<role:female> Hello there. <role:narrator,pitch:high,speed:low> Fine, thanks. <role:male> Good."
    with spark_server.client() as client:
        whole = client.post("/multi_speak", json={"text": text, "response_format": "pcm", **SHORT})
        streamed = client.post(
            "/v1/multi_speak", json={"text": text, "response_format": "mp3", "stream": True, **SHORT}
        )
    assert whole.status_code == 200, whole.text
    seconds = len(whole.content) / 2 / 16000
    speech = 3 * SHORT["max_tokens"] * 320 / 16000
    assert abs(seconds - (speech + 2 * 0.2)) < 0.05  # three segments and two default pauses of 0.2 s
    pcm = np.frombuffer(whole.content, dtype="<i2")
    gap_start = int(SHORT["max_tokens"] * 320)
    assert np.all(pcm[gap_start + 400 : gap_start + 2800] == 0)  # the pause is silence
    assert streamed.status_code == 200 and audio_decoder(streamed.content)[0].size > 0


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Hello <role:female> hi", "before the first"),
        ("<role:stranger> hi", "unknown role 'stranger'"),
        ("no tags at all", "<role:NAME>"),
        ("<role:female,volume:11> hi", "bad option"),
        ("<role:female> hi <role:male yo", "unclosed <role:...> tag"),
        ("<role:female> hi <role:<role:male>> yo", "unclosed <role:...> tag"),
    ],
)
def test_multi_speak_names_the_problem(spark_server, text, fragment):
    with spark_server.client() as client:
        r = client.post("/multi_speak", json={"text": text, "stream": True})
    assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text


def test_role_dir_content_is_loaded_at_startup(spark_server):
    with spark_server.client() as client:
        roles = client.get("/audio_roles").json()
        info = client.get("/server_info").json()
        spoken = client.post(
            "/speak", json={"name": "narrator", "text": "From the folder.", "response_format": "pcm", **SHORT}
        )
    assert roles["success"] is True and "narrator" in roles["saved"] and {"female", "male"} <= set(roles["roles"])
    assert "narrator" in info["roles"]
    assert spoken.status_code == 200
    # Its tokens were computed at startup and cached in a safe format, never as a pickle.
    cached = list((spark_server.role_dir / "narrator" / "cache").rglob("*"))
    assert any(p.suffix == ".npy" for p in cached) and not any(p.suffix in (".pkl", ".pt") for p in cached)


def test_a_broken_role_folder_is_a_400_naming_the_role(spark_server):
    import shutil

    import soundfile as sf

    broken, silent = spark_server.role_dir / "broken", spark_server.role_dir / "hushed"
    broken.mkdir()
    (broken / "voice.wav").write_bytes(b"\0garbage" * 100)
    silent.mkdir()
    sf.write(silent / "voice.wav", np.zeros(16000, dtype=np.float32), 16000)
    try:
        with spark_server.client() as client:
            r = client.post("/speak", json={"name": "broken", "text": "Hi.", **SHORT})
            d = client.post("/multi_speak", json={"text": "<role:female> Hi. <role:broken> Yo.", **SHORT})
            s = client.post("/speak", json={"name": "hushed", "text": "Hi.", **SHORT})
    finally:
        shutil.rmtree(broken)
        shutil.rmtree(silent)
    for resp in (r, d):
        error = resp.json()["error"]
        assert resp.status_code == 400 and error["param"] == "name", resp.text
        assert error["message"] == "saved role 'broken' cannot be used: voice.wav is not a readable WAV file"
    assert s.status_code == 400 and s.json()["error"]["message"].startswith("saved role 'hushed' cannot be used")
    assert "Traceback" not in spark_server.log.read_text()


def test_add_use_and_delete_a_role(spark_server, reference_wav, disk_snapshot):
    role_dir = spark_server.role_dir
    with spark_server.client() as client:
        added = client.post(
            "/add_speaker",
            data={"name": "alice", "reference_text": "hello"},
            files={"audio_file": ("a.wav", reference_wav, "audio/wav")},
        )
        assert added.json() == {"success": True, "role": "alice"}
        assert (role_dir / "alice" / "reference.wav").is_file()
        assert (role_dir / "alice" / "reference_text.txt").read_text() == "hello"
        before = disk_snapshot(role_dir)
        again = client.post("/add_speaker", data={"name": "alice"}, files={"audio_file": ("a.wav", reference_wav)})
        assert again.status_code == 409 and disk_snapshot(role_dir) == before
        b64 = client.post("/v1/add_speaker", data={"name": "bob", "audio": base64.b64encode(reference_wav).decode()})
        assert b64.status_code == 200
        assert {"alice", "bob"} <= set(client.get("/v1/audio_roles").json()["saved"])
        spoken = client.post(
            "/speak", json={"name": "alice", "text": "Saved voice.", "response_format": "wav", **SHORT}
        )
        assert spoken.status_code == 200
        assert client.post("/delete_speaker", data={"name": "alice"}).json() == {"success": True, "role": "alice"}
        assert client.post("/v1/delete_speaker", data={"name": "bob"}).status_code == 200
        gone = client.post("/delete_speaker", data={"name": "alice"})
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"
        builtin = client.post("/delete_speaker", data={"name": "female"})
        assert builtin.status_code == 400
    assert not (role_dir / "alice").exists() and not (role_dir / "bob").exists()
    assert not [p for p in role_dir.iterdir() if p.name.startswith(".")]  # no temp or trash folders left


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x" * 65, "nul\0byte", "", "CON", "\U00010400" * 64])
def test_invalid_role_names_change_nothing(spark_server, reference_wav, disk_snapshot, name):
    role_dir = spark_server.role_dir
    before = disk_snapshot(role_dir)
    with spark_server.client() as client:
        r = client.post("/add_speaker", data={"name": name}, files={"audio_file": ("a.wav", reference_wav)})
        d = client.post("/delete_speaker", data={"name": name})
    assert r.status_code == 400 and r.json()["error"]["param"] == "name", r.text
    assert d.status_code in (400, 404)
    assert disk_snapshot(role_dir) == before
    assert not (role_dir.parent / "evil").exists()


def test_a_name_too_long_for_the_filesystem_is_a_4xx_on_every_route(spark_server):
    name = "\U00010400" * 64  # 64 letters, but 256 bytes in UTF-8: no filesystem takes it as a folder name
    with spark_server.client() as client:
        speak = client.post("/speak", json={"name": name, "text": "hi", **SHORT})
        dialogue = client.post("/multi_speak", json={"text": f"<role:{name}> hi", **SHORT})
        openai = client.post("/v1/audio/speech", json={"input": "hi", "voice": name, **SHORT})
    assert speak.status_code == 404 and openai.status_code == 404, (speak.text, openai.text)
    assert dialogue.status_code == 400 and "unknown role" in dialogue.json()["error"]["message"]


def test_concurrent_adds_of_one_name_save_it_once(spark_server, reference_wav):
    import concurrent.futures

    def add(i: int) -> int:
        with spark_server.client() as client:
            files = {"audio_file": ("a.wav", reference_wav, "audio/wav")}
            return client.post(
                "/add_speaker", data={"name": "racer", "reference_text": f"take {i}"}, files=files
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(add, range(6)))
    with spark_server.client() as client:
        assert client.post("/delete_speaker", data={"name": "racer"}).status_code == 200
    assert codes == [200] + [409] * 5
    assert not [p for p in spark_server.role_dir.iterdir() if p.name.startswith(".")]


def test_add_speaker_with_undecodable_audio_writes_nothing(spark_server, disk_snapshot):
    before = disk_snapshot(spark_server.role_dir)
    with spark_server.client() as client:
        r = client.post("/add_speaker", data={"name": "broken"}, files={"audio_file": ("a.wav", b"\0" * 4000)})
        silent = io.BytesIO()
        import soundfile as sf

        sf.write(silent, np.zeros(16000, dtype=np.float32), 16000, format="WAV")
        s = client.post("/add_speaker", data={"name": "silent"}, files={"audio_file": ("s.wav", silent.getvalue())})
    assert r.status_code == 400 and s.status_code == 400 and "silent" in s.json()["error"]["message"]
    assert disk_snapshot(spark_server.role_dir) == before


def test_server_info_describes_the_model(spark_server):
    with spark_server.client() as client:
        info = client.get("/server_info").json()
        v1 = client.get("/v1/server_info").json()
    assert info["engine"] == "spark" and info["backend"] == "torch" and info["sample_rate"] == 16000
    assert info["capabilities"]["clone"] is True and info["capabilities"]["pitch_speed"] is True
    assert info["voices"] == ["female", "male"] and set(info["formats"]) >= {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    assert info["active_generations"] == 0 and info["auth_required"] is False
    assert v1["engine"] == info["engine"]


def test_roles_survive_a_restart(tiny_spark, tmp_path, reference_wav):
    from conftest import start_server

    args = ["--model_path", str(tiny_spark), "--backend", "torch", "--role_dir", str(tmp_path / "roles")]
    first = start_server(args, tmp_path)
    try:
        with first.client() as client:
            added = client.post(
                "/add_speaker",
                data={"name": "Persistent Voice", "reference_text": "kept"},
                files={"audio_file": ("a.wav", reference_wav)},
            )
            assert added.status_code == 200
            before = client.post(
                "/speak",
                json={"name": "Persistent Voice", "text": "Same.", "response_format": "pcm", "seed": 4, **SHORT},
            ).content
    finally:
        first.stop()
    second = start_server(args, tmp_path)
    try:
        with second.client() as client:
            assert "Persistent Voice" in client.get("/audio_roles").json()["saved"]
            after = client.post(
                "/speak",
                json={"name": "Persistent Voice", "text": "Same.", "response_format": "pcm", "seed": 4, **SHORT},
            )
        assert after.status_code == 200 and after.content == before  # same stored tokens, same seed: same audio
    finally:
        second.stop()


def test_every_response_names_its_replica_and_a_single_server_never_loads_ray(spark_server):
    """X-FlashTTS-Replica is hostname:pid here (Ray replicas add their id: tests/test_ray_serve.py)."""
    import os
    from pathlib import Path

    me = f"{os.uname().nodename}:{spark_server.proc.pid}"
    with spark_server.client() as client:
        assert client.get("/health").headers["X-FlashTTS-Replica"] == me
        refused = client.post("/speak", json={"name": "nobody", "text": "Hi."})
        assert refused.status_code == 404 and refused.headers["X-FlashTTS-Replica"] == me
        with client.stream("POST", "/speak", json={"name": "female", "text": "Hi.", "stream": True, **SHORT}) as r:
            assert r.status_code == 200 and r.headers["X-FlashTTS-Replica"] == me
            r.read()
    # Without --replicas, Ray's core library is never mapped into the server process.
    assert "_raylet" not in Path(f"/proc/{spark_server.proc.pid}/maps").read_text()
