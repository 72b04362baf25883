"""--api_key, the size and length limits, and reference audio by URL, through a real server."""

from __future__ import annotations

import base64
import http.server
import socket
import threading

import httpx
import openai
import pytest

from conftest import start_server, torch_server_args

KEY = "s3cret-key"
SHORT = {"max_tokens": 40}


@pytest.fixture(scope="module")
def audio_host(reference_wav):
    """An HTTP server on 127.0.0.1 serving /ref.wav, a redirect to it, and a large file."""
    big = b"\0" * (600 * 1024)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ref.wav")
                self.end_headers()
                return
            body = {"/ref.wav": reference_wav, "/big.wav": big}.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def guarded_server(tiny_spark, tmp_path_factory, reference_wav):
    """API key, small limits, private URLs allowed (for the local audio host), a saved role as default voice."""
    tmp = tmp_path_factory.mktemp("guarded")
    (tmp / "roles" / "deep").mkdir(parents=True)
    (tmp / "roles" / "deep" / "deep.wav").write_bytes(reference_wav)
    server = start_server(
        torch_server_args(
            tiny_spark,
            tmp,
            "--api_key",
            KEY,
            "--max_text_length",
            "200",
            "--max_upload_mb",
            "0.5",
            "--max_reference_seconds",
            "3",
            "--allow_private_urls",
            "--default_voice",
            "deep",
        ),
        tmp,
    )
    server.role_dir = tmp / "roles"
    yield server
    server.stop()


def authed(server) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {KEY}"})


API_ROUTES = [
    ("GET", "/server_info"),
    ("GET", "/audio_roles"),
    ("GET", "/v1/audio_roles"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/spark"),
    ("GET", "/v1/audio/voices"),
    ("POST", "/speak"),
    ("POST", "/v1/speak"),
    ("POST", "/multi_speak"),
    ("POST", "/clone_voice"),
    ("POST", "/add_speaker"),
    ("POST", "/delete_speaker"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/clone_voice"),
    ("GET", "/v1/server_info"),
]


@pytest.mark.parametrize("method, path", API_ROUTES)
def test_every_api_route_needs_the_key(guarded_server, method, path):
    with guarded_server.client() as client:
        missing = client.request(method, path)
        wrong = client.request(method, path, headers={"Authorization": "Bearer wrong"})
        basic = client.request(method, path, headers={"Authorization": f"Basic {KEY}"})
    for r in (missing, wrong, basic):
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_page_docs_and_schema_stay_reachable(guarded_server):
    with guarded_server.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and "<title>FlashTTS" in page.text
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "FlashTTS"
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        # Without --metrics_require_api_key, Prometheus scrapes /metrics without the key.
        assert client.get("/metrics").status_code == 200


def test_the_right_key_opens_every_route(guarded_server):
    with authed(guarded_server) as client:
        assert client.get("/server_info").json()["auth_required"] is True
        r = client.post("/speak", json={"name": "female", "text": "Hi.", "response_format": "pcm", **SHORT})
        assert r.status_code == 200


def test_openai_client_errors_on_a_wrong_key(guarded_server):
    wrong = openai.OpenAI(base_url=f"{guarded_server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.speech.create(model="tts-1", voice="alloy", input="x")
    right = openai.OpenAI(base_url=f"{guarded_server.url}/v1", api_key=KEY, max_retries=0)
    audio = right.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="pcm", extra_body=SHORT
    )
    assert len(audio.content) == SHORT["max_tokens"] * 480 * 2  # OpenAI's pcm: 24 kHz


def test_openai_voice_names_use_the_configured_default_voice(guarded_server):
    with authed(guarded_server) as client:
        body = {"model": "x", "input": "Same.", "response_format": "pcm", "seed": 9, **SHORT}
        alloy = client.post("/v1/audio/speech", json={**body, "voice": "alloy"})
        deep = client.post("/v1/audio/speech", json={**body, "voice": "deep"})
        female = client.post("/v1/audio/speech", json={**body, "voice": "female"})
        unknown = client.post("/v1/audio/speech", json={**body, "voice": "not-an-openai-name"})
    assert alloy.status_code == 200 and alloy.content == deep.content != female.content
    assert unknown.status_code == 404


def test_text_over_the_limit_is_refused(guarded_server):
    with authed(guarded_server) as client:
        native = client.post("/speak", json={"name": "male", "text": "a" * 201})
        openai_route = client.post("/v1/audio/speech", json={"model": "x", "input": "a" * 201, "voice": "alloy"})
    assert native.status_code == 413 and native.json()["error"]["param"] == "text"
    # OpenAI answers an input over its limit with a 400 (string_above_max_length), and so does this route.
    assert openai_route.status_code == 400 and openai_route.json()["error"]["param"] == "input"
    assert openai_route.json()["error"]["code"] == "string_above_max_length"


def test_uploads_over_the_limit_are_refused_and_write_nothing(guarded_server, disk_snapshot):
    before = disk_snapshot(guarded_server.role_dir)
    big = b"RIFF" + b"\0" * (2 * 1024 * 1024)
    with authed(guarded_server) as client:
        declared = client.post("/add_speaker", data={"name": "huge"}, files={"audio_file": ("a.wav", big)})

        def chunked():  # no Content-Length: the server counts the bytes as they arrive
            yield b'--xyz\r\nContent-Disposition: form-data; name="audio_file"; filename="a.wav"\r\n\r\n'
            for _ in range(64):
                yield b"\0" * 65536

        streamed = client.post(
            "/add_speaker", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        part = client.post("/add_speaker", data={"name": "part"}, files={"audio_file": ("a.wav", b"\0" * 600_000)})
        b64 = client.post("/add_speaker", data={"name": "b64", "audio": base64.b64encode(b"\0" * 600_000).decode()})
    for r in (declared, streamed, part, b64):
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "payload_too_large"
    assert disk_snapshot(guarded_server.role_dir) == before


def test_reference_clips_over_the_duration_limit_are_refused(guarded_server, disk_snapshot):
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(np.arange(8000 * 4) / 3)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    before = disk_snapshot(guarded_server.role_dir)
    with authed(guarded_server) as client:
        r = client.post("/add_speaker", data={"name": "long"}, files={"audio_file": ("long.wav", buf.getvalue())})
    assert r.status_code == 400 and "maximum is 3 s" in r.json()["error"]["message"]
    assert disk_snapshot(guarded_server.role_dir) == before


def test_reference_audio_by_url(guarded_server, audio_host):
    with authed(guarded_server) as client:
        cloned = client.post(
            "/clone_voice",
            data={"text": "By URL.", "reference_audio": f"{audio_host}/ref.wav", "response_format": "pcm", **SHORT},
        )
        redirected = client.post(
            "/v1/audio/speech",
            json={"model": "x", "input": "Hi.", "voice": f"{audio_host}/redirect", "response_format": "pcm", **SHORT},
        )
        added = client.post("/add_speaker", data={"name": "from-url", "audio": f"{audio_host}/ref.wav"})
        missing = client.post("/clone_voice", data={"text": "x", "reference_audio": f"{audio_host}/nothing.wav"})
        too_big = client.post("/clone_voice", data={"text": "x", "reference_audio": f"{audio_host}/big.wav"})
    assert cloned.status_code == 200 and redirected.status_code == 200, (cloned.text, redirected.text)
    assert added.status_code == 200 and (guarded_server.role_dir / "from-url" / "reference.wav").is_file()
    assert missing.status_code == 400 and "HTTP 404" in missing.json()["error"]["message"]
    assert too_big.status_code == 413


@pytest.mark.parametrize("host", ["127.1", "2130706433", "[::1]", "localhost", "0x7f.0.0.1"])
def test_loopback_urls_are_refused_without_the_option(spark_server, host):
    with spark_server.client() as client:
        native = client.post(
            "/clone_voice", data={"text": "x", "reference_audio": f"http://{host}:{spark_server.port}/"}
        )
        oa = client.post("/v1/audio/speech", json={"model": "x", "input": "x", "voice": f"http://{host}/a.wav"})
        role = client.post("/add_speaker", data={"name": "u", "audio": f"https://{host}/a.wav"})
    for r, param in ((native, "reference_audio"), (oa, "voice"), (role, "audio")):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "url_refused" and r.json()["error"]["param"] == param


def test_non_http_schemes_are_refused(spark_server):
    with spark_server.client() as client:
        for url in ("ftp://127.0.0.1/a.wav", "gopher://x/"):
            r = client.post("/add_speaker", data={"name": "u", "audio": url})
            assert r.status_code == 400


def test_unused_socket_port_is_never_contacted(spark_server):
    # A refused URL must not be fetched: a listener on 127.0.0.1 sees no connection.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        with spark_server.client() as client:
            r = client.post("/clone_voice", data={"text": "x", "reference_audio": f"http://127.0.0.1:{port}/a.wav"})
        assert r.status_code == 400
        with pytest.raises(socket.timeout):
            listener.accept()
