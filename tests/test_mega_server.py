"""MegaTTS3 end to end through a real `flashtts serve` on the tiny model (every installed backend for
the core cases, torch for the rest) and through `flashtts infer`."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import Server, installed_backends, start_server

RATE = 24000
FAST = {"time_step": 4, "seed": 7}  # 4 DiT steps keep the tiny model quick; the seed makes it repeatable
BAD_LATENTS = {
    "not an npy file": b"this is not a numpy file",
    "pickled": None,  # filled in below: an object array needs unpickling
    "integers": np.zeros((1, 200, 32), np.int32),
    "two dimensions": np.zeros((200, 32), np.float32),
    "16 channels": np.zeros((1, 200, 16), np.float32),
    "NaN": np.full((1, 200, 32), np.nan, np.float32),
    "too short": np.zeros((1, 5, 32), np.float32),
}


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def bad_latent_bytes(case: str) -> bytes:
    if case == "pickled":
        return npy(np.array([{"latent": 1}], dtype=object))
    value = BAD_LATENTS[case]
    return value if isinstance(value, bytes) else npy(value)


def mega_with_gguf(model: Path, folder: Path) -> Path:
    """``folder``: the model (linked) with an f32 GGUF of g2p/ inside g2p/, where llama-cpp looks."""
    from flashtts_backends.gguf_convert import convert_to_gguf

    folder.mkdir(parents=True, exist_ok=True)
    for item in model.iterdir():
        if item.name != "g2p":
            (folder / item.name).symlink_to(item)
    (folder / "g2p").mkdir()
    for item in (model / "g2p").iterdir():
        (folder / "g2p" / item.name).symlink_to(item)
    convert_to_gguf(model / "g2p", outtype="f32", outfile=folder / "g2p" / "model-f32.gguf")
    return folder


def server_args(model: Path, backend: str, roles: Path) -> list[str]:
    return [
        "--model_path", str(model), "--backend", backend, "--llm_device", "cpu", "--tokenizer_device", "cpu",
        "--detokenizer_device", "cpu", "--batch_size", "4", "--wait_timeout", "0.05", "--role_dir", str(roles),
    ]  # fmt: skip


@pytest.fixture(scope="module", params=installed_backends())
def server(request, tiny_mega, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp(f"mega-server-{request.param}")
    model = mega_with_gguf(tiny_mega, tmp / "model") if request.param == "llama-cpp" else tiny_mega
    srv = start_server(server_args(model, request.param, tmp / "roles"), tmp)
    srv.backend = request.param
    srv.roles = tmp / "roles"
    yield srv
    srv.stop()


def torch_only(server: Server) -> None:
    if server.backend != "torch":
        pytest.skip("engine-level behaviour, covered on the torch backend")


def reference_files(tiny_mega: Path, latent: bytes | None = None) -> dict:
    files = {"reference_audio_file": ("example.wav", (tiny_mega / "example.wav").read_bytes(), "audio/wav")}
    latent = (tiny_mega / "example.npy").read_bytes() if latent is None else latent
    files["latent_file"] = ("example.npy", latent, "application/octet-stream")
    return files


def role_files(tiny_mega: Path, latent: bytes | None = None) -> dict:
    files = reference_files(tiny_mega, latent)
    return {"audio_file": files["reference_audio_file"], "latent_file": files["latent_file"]}


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def streamed(client, method: str, url: str, **kwargs) -> bytes:
    with client.stream(method, url, **kwargs) as r:
        assert r.status_code == 200, r.read()
        return b"".join(r.iter_bytes())


def add_role(client, tiny_mega: Path, name: str, latent: bytes | None = None):
    return client.post("/add_speaker", data={"name": name, "overwrite": "true"}, files=role_files(tiny_mega, latent))


# -- every backend ---------------------------------------------------------------------------------
def test_clone_voice_with_a_latent_whole_and_streamed_are_the_same_audio(server, tiny_mega):
    form = {"text": "Hi.", "response_format": "pcm", **{k: str(v) for k, v in FAST.items()}}
    with server.client() as client:
        info = client.get("/server_info").json()
        whole = client.post("/clone_voice", data={**form, "stream": "false"}, files=reference_files(tiny_mega))
        stream = streamed(
            client, "POST", "/clone_voice", data={**form, "stream": "true"}, files=reference_files(tiny_mega)
        )
    assert info["engine"] == "mega" and info["sample_rate"] == RATE and info["capabilities"]["latent"] is True
    assert whole.status_code == 200, whole.text
    assert whole.headers["x-sample-rate"] == "24000"
    audio = pcm(whole.content)
    # "Hi." is bounded by its text: a couple of seconds, never the tiny model's runaway durations.
    assert 0.3 * RATE < audio.size <= 3.0 * RATE and np.abs(audio).max() > 0
    assert stream == whole.content


def test_add_speaker_with_a_latent_then_speak_and_the_openai_route(server, tiny_mega):
    with server.client() as client:
        added = add_role(client, tiny_mega, "alice")
        assert added.status_code == 200, added.text
        body = {"name": "alice", "text": "Hello.", "response_format": "pcm", **FAST}
        whole = client.post("/speak", json={**body, "stream": False})
        stream = streamed(client, "POST", "/speak", json={**body, "stream": True})
        openai = client.post(
            "/v1/audio/speech",
            json={
                "model": "mega",
                "input": "Hello.",
                "voice": "alice",
                "response_format": "pcm",
                "stream": False,
                **FAST,
            },
        )
        voices = client.get("/v1/audio/voices").json()
    assert whole.status_code == 200, whole.text
    assert stream == whole.content and pcm(whole.content).size > 0.3 * RATE
    assert openai.status_code == 200, openai.text
    assert openai.content == whole.content  # the same voice, text and seed on the OpenAI route
    assert "alice" in voices["voices"]


# -- engine behaviour, on torch --------------------------------------------------------------------
def test_multi_speak_across_two_roles(server, tiny_mega):
    torch_only(server)
    other = np.load(tiny_mega / "example.npy") * 0.5
    with server.client() as client:
        assert add_role(client, tiny_mega, "alice").status_code == 200
        assert add_role(client, tiny_mega, "bob", npy(other)).status_code == 200
        one = client.post("/speak", json={"name": "bob", "text": "Yes.", "response_format": "pcm", **FAST})
        both = client.post(
            "/multi_speak", json={"text": "<role:alice> Hi. <role:bob> Yes.", "response_format": "pcm", **FAST}
        )
    assert both.status_code == 200, both.text
    assert pcm(both.content).size > pcm(one.content).size + 0.2 * RATE  # two speakers and a pause


def test_long_text_streams_segment_by_segment_and_equals_the_whole(server, tiny_mega):
    torch_only(server)
    text = ("This first sentence is long enough that the text splitter has to cut here. "
            "And this second sentence becomes the next segment, spoken after a crossfade.")  # fmt: skip
    body = {"name": "alice", "text": text, "response_format": "pcm", "max_tokens": 3, **FAST}
    with server.client() as client:
        assert add_role(client, tiny_mega, "alice").status_code == 200
        whole = client.post("/speak", json={**body, "stream": False})
        chunks = []
        with client.stream("POST", "/speak", json={**body, "stream": True}) as r:
            for piece in r.iter_raw():
                chunks.append(piece)
    assert whole.status_code == 200, whole.text
    assert b"".join(chunks) == whole.content
    assert len(chunks) >= 2  # the first segment went out before the second was ready


@pytest.mark.parametrize("route", ["/clone_voice", "/add_speaker"])
def test_every_bad_latent_is_a_400_naming_latent_file(server, tiny_mega, route):
    torch_only(server)
    with server.client() as client:
        for case in [*BAD_LATENTS, "missing"]:
            latent = None if case == "missing" else bad_latent_bytes(case)
            if route == "/clone_voice":
                files = reference_files(tiny_mega, latent or b"")
                if case == "missing":
                    del files["latent_file"]
                r = client.post(route, data={"text": "Hi.", **{k: str(v) for k, v in FAST.items()}}, files=files)
            else:
                files = role_files(tiny_mega, latent or b"")
                if case == "missing":
                    del files["latent_file"]
                r = client.post(route, data={"name": f"bad-{case.replace(' ', '-')}"}, files=files)
            assert r.status_code == 400, (case, r.status_code, r.text)
            error = r.json()["error"]
            assert error["param"] == "latent_file" and "latent" in error["message"], (case, error)
        roles = client.get("/audio_roles").json()["saved"]
    assert not [name for name in roles if name.startswith("bad-")]  # a refused role is never saved


def test_pitch_is_400_speed_scales_durations_and_dit_fields_are_validated(server, tiny_mega):
    torch_only(server)
    with server.client() as client:
        assert add_role(client, tiny_mega, "alice").status_code == 200
        # max_tokens set: the text bound is off, so the durations (and speed) decide the length
        body = {"name": "alice", "text": "Hi.", "response_format": "pcm", "max_tokens": 6, **FAST}
        pitch = client.post("/speak", json={**body, "pitch": "high"})
        normal = client.post("/speak", json=body)
        fast = client.post("/speak", json={**body, "speed": "very_high"})
        bad = {
            field: client.post("/speak", json={**body, field: value})
            for field, value in (("time_step", 0), ("time_step", 500), ("p_w", -1), ("t_w", "x"))
        }
        openai_fast = client.post(
            "/v1/audio/speech",
            json={
                "input": "Hi.",
                "voice": "alice",
                "speed": 4.0,
                "response_format": "pcm",
                "stream": False,
                "max_tokens": 6,
                **FAST,
            },
        )
    assert pitch.status_code == 400 and pitch.json()["error"]["param"] == "pitch"
    assert normal.status_code == 200 and fast.status_code == 200 and openai_fast.status_code == 200
    assert pcm(fast.content).size < pcm(normal.content).size
    assert openai_fast.content == fast.content  # OpenAI's 4.0 is the very_high level
    for field, r in bad.items():
        assert r.status_code == 400, (field, r.text)
        assert field in (r.json()["error"]["param"] or "") + r.json()["error"]["message"]


def test_concurrent_requests_share_dit_batches(server, tiny_mega):
    torch_only(server)
    results: list[int] = []

    def one(seed: int) -> None:
        with server.client() as client:
            form = {"text": "Hi there.", "response_format": "pcm", "time_step": "8", "seed": str(seed)}
            results.append(client.post("/clone_voice", data=form, files=reference_files(tiny_mega)).status_code)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert "requests in one batch" in server.output()


def test_roles_survive_a_restart(server, tiny_mega, tmp_path):
    torch_only(server)
    body = {"name": "carol", "text": "Hello.", "response_format": "pcm", **FAST}
    with server.client() as client:
        assert add_role(client, tiny_mega, "carol").status_code == 200
        before = client.post("/speak", json=body)
    roles = server.roles
    saved = roles / "carol"
    assert (saved / "latent.npy").is_file() and (saved / "reference.wav").is_file()
    cached = {p.name for p in (saved / "cache" / "mega").glob("*.npy")}
    assert cached == {"ph.npy", "tone.npy", "mel2ph.npy", "loudness.npy"}
    # A new server process on the same role_dir reads the role from disk alone.
    again = start_server(server_args(tiny_mega, "torch", roles), tmp_path)
    try:
        with again.client() as client:
            assert "carol" in client.get("/audio_roles").json()["saved"]
            after = client.post("/speak", json=body)
    finally:
        again.stop()
    assert before.status_code == after.status_code == 200
    assert after.content == before.content


def test_tiny_model_layout_and_infer_with_reference_audio_and_latent_file(tiny_mega, tmp_path):
    import torch

    for folder, ckpt, key in (
        ("aligner_lm", "model_only_last.ckpt", "model"),
        ("duration_lm", "model_only_last.ckpt", "dur_model"),
        ("diffusion_transformer", "model_only_last.ckpt", "dit"),
        ("wavvae", "decoder.ckpt", "model_gen"),
    ):
        assert (tiny_mega / folder / "config.yaml").is_file()
        saved = torch.load(tiny_mega / folder / ckpt, map_location="cpu", weights_only=True)
        assert list(saved) == ["state_dict"] and list(saved["state_dict"]) == [key]
    assert (tiny_mega / "g2p" / "config.json").is_file() and (tiny_mega / "g2p" / "tokenizer.json").is_file()
    out = tmp_path / "out.wav"
    done = subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", "infer", "--model_path", str(tiny_mega), "--backend", "torch",
         "--reference_audio", str(tiny_mega / "example.wav"), "--latent_file", str(tiny_mega / "example.npy"),
         "-i", "Hi.", "--time_step", "4", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    audio, rate = sf.read(out)
    assert rate == RATE and 0.3 * RATE < len(audio) <= 3.0 * RATE


def test_web_page_clones_with_a_latent_and_adds_a_role(server, tiny_mega):
    torch_only(server)
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs a chromium binary (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(server.url + "/")
            page.wait_for_function("window.flashtts.info !== null")
            # Mega: a latent beside the reference audio, the DiT fields and speed; no pitch.
            assert page.is_visible("#time-step") and page.is_visible("#p-w") and page.is_visible("#t-w")
            assert page.is_visible("#speak-speed") and not page.is_visible("#speak-pitch")
            page.click("nav button[data-tab=clone]")
            assert page.is_visible("#clone-latent")
            page.fill("#time-step", "4")
            page.select_option("#format", "pcm")
            page.select_option("#stream", "true")
            page.set_input_files("#clone-file", str(tiny_mega / "example.wav"))
            page.set_input_files("#clone-latent", str(tiny_mega / "example.npy"))
            page.fill("#clone-save-name", "from-page")
            page.click("#clone-go")
            page.wait_for_function("window.flashtts.done", timeout=120_000)
            assert page.evaluate("window.flashtts.lastSamples") > 0.3 * RATE, page.inner_text("#status")
            page.click("nav button[data-tab=roles]")
            page.fill("#role-name", "from-roles-tab")
            page.set_input_files("#role-file", str(tiny_mega / "example.wav"))
            page.set_input_files("#role-latent", str(tiny_mega / "example.npy"))
            page.click("#role-add")
            page.wait_for_selector("button[data-delete='from-roles-tab']")
            assert problems == []
        finally:
            browser.close()
    assert (server.roles / "from-page" / "latent.npy").is_file()
    assert (server.roles / "from-roles-tab" / "latent.npy").is_file()


def test_cartesia_word_timestamps_come_from_the_phone_durations(server, tiny_mega):
    """Over the Cartesia socket Mega's words are timed by its phone durations (10 ms frames), not spread
    by characters: the first word starts after the leading 'sil', every time is a whole frame, the last
    word ends with the audio the socket sent."""
    import asyncio
    import base64
    import json

    from flashtts_core.text import text_units
    from flashtts_server.realtime.session import spread_words
    from websockets.asyncio.client import connect

    torch_only(server)
    with server.client() as client:
        assert add_role(client, tiny_mega, "timed").status_code == 200
    text = "Hello there, how are you today?"

    async def run() -> list[dict]:
        url = f"ws://127.0.0.1:{server.port}/tts/websocket?cartesia_version=2025-04-16"
        async with connect(url, open_timeout=60) as ws:
            await ws.send(
                json.dumps(
                    {
                        "context_id": "c",
                        "transcript": text,
                        "continue": False,
                        "add_timestamps": True,
                        "model_id": "sonic-2",
                        "voice": {"mode": "id", "id": "timed"},
                        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
                    }  # fmt: skip
                )
            )
            messages = []
            while not messages or not messages[-1]["done"]:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 300)))
            return messages

    messages = asyncio.run(run())
    assert messages[-1]["type"] == "done", messages[-1]
    seconds = len(b"".join(base64.b64decode(m["data"]) for m in messages if m["type"] == "chunk")) / 2 / RATE
    stamps = [m for m in messages if m["type"] == "timestamps"]
    assert len(stamps) == 1
    words = stamps[0]["word_timestamps"]
    assert words["words"] == text_units(text)
    assert isinstance(stamps[0]["timestamps_estimated"], bool)
    starts, ends = words["start"], words["end"]
    assert 0 < starts[0] < ends[0]  # after the leading sil (the estimate starts at 0)
    assert ends[-1] == pytest.approx(seconds, abs=1e-4)  # the segment's measured end
    times = starts + ends[:-1]
    assert all(abs(t * 100 - round(t * 100)) < 1e-6 for t in times)  # phone boundaries: whole 10 ms frames
    assert all(a <= b for a, b in zip(starts, ends)) and all(a <= b for a, b in zip(ends, starts[1:]))
    assert starts != spread_words(text, 0.0, seconds).start  # not the characters' estimate
