"""Every route goes through the engine contract: an engine without cloning or pitch/speed (Orpheus)
answers a clear 400 for those, and its named voices work through the native and OpenAI routes."""

from __future__ import annotations

import base64

import pytest

from conftest import start_server, torch_server_args

SHORT = {"max_tokens": 70}


@pytest.fixture(scope="module")
def orpheus_server(tiny_orpheus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orpheus-api")
    server = start_server(torch_server_args(tiny_orpheus, tmp), tmp)
    server.role_dir = tmp / "roles"
    yield server
    server.stop()


def test_named_voices_work_and_openai_names_map_to_the_first(orpheus_server, audio_decoder):
    with orpheus_server.client() as client:
        info = client.get("/server_info").json()
        assert info["capabilities"]["clone"] is False and info["capabilities"]["pitch_speed"] is False
        first = info["voices"][0]
        spoken = client.post("/speak", json={"name": first, "text": "Hi.", "response_format": "wav", **SHORT})
        mapped = client.post(
            "/v1/audio/speech",
            json={"model": "x", "input": "Hi.", "voice": "alloy", "response_format": "flac", **SHORT},
        )
        plain_speed = client.post(
            "/v1/audio/speech",
            json={"model": "x", "input": "Hi.", "voice": first, "speed": 1.0, "response_format": "pcm", **SHORT},
        )
    assert spoken.status_code == 200, spoken.text
    samples, rate = audio_decoder(spoken.content)
    assert rate == info["sample_rate"] == 24000 and samples.size > 0
    assert mapped.status_code == 200 and audio_decoder(mapped.content)[1] == 24000
    assert plain_speed.status_code == 200


def test_what_the_engine_cannot_do_is_a_clear_400(orpheus_server, reference_wav, disk_snapshot):
    before = disk_snapshot(orpheus_server.role_dir)
    b64 = base64.b64encode(reference_wav).decode()
    with orpheus_server.client() as client:
        first = client.get("/server_info").json()["voices"][0]
        answers = {
            "clone": client.post(
                "/clone_voice", data={"text": "x"}, files={"reference_audio_file": ("r.wav", reference_wav)}
            ),
            "add role": client.post("/add_speaker", data={"name": "r"}, files={"audio_file": ("r.wav", reference_wav)}),
            "openai clone": client.post("/v1/audio/speech", json={"model": "x", "input": "x", "voice": b64}),
            "pitch": client.post("/speak", json={"name": first, "text": "x", "pitch": "high"}),
            "openai speed": client.post(
                "/v1/audio/speech", json={"model": "x", "input": "x", "voice": first, "speed": 2}
            ),
            "dialogue speed": client.post("/multi_speak", json={"text": f"<role:{first},speed:low> x", "stream": True}),
        }
    for what, r in answers.items():
        assert r.status_code == 400, (what, r.text)
        assert r.json()["error"]["code"] == "unsupported_capability", (what, r.json())
    assert disk_snapshot(orpheus_server.role_dir) == before
