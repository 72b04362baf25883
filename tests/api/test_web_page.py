"""The web page in headless Chromium (Debian's chromium, driven by playwright) against a live server."""

from __future__ import annotations

import shutil

import pytest

from conftest import start_server, torch_server_args

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium binary (apt-get install chromium)")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    # A fake microphone (a beeping tone) and an auto-accepted permission prompt, for the recording path.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.problems = []
    page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    yield page
    context.close()


def test_page_lists_voices_speaks_streamed_and_whole_and_manages_roles(spark_server, page, reference_wav, tmp_path):
    page.goto(spark_server.url + "/")
    page.wait_for_function("window.flashtts.voices.length > 0")
    options = page.locator("#speak-voice option").all_inner_texts()
    assert any(o.startswith("female") for o in options) and any(o.startswith("narrator") for o in options)
    assert "spark" in page.inner_text("#server-info")

    # Streamed wav: played with WebAudio while the bytes arrive.
    page.fill("#max-tokens", "150")
    page.select_option("#format", "wav")
    page.select_option("#stream", "true")
    page.click("#speak-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    state = page.evaluate("({samples: window.flashtts.lastSamples, scheduled: window.flashtts.scheduled})")
    assert state["samples"] == 150 * 320 and state["scheduled"] >= 1
    assert "played while streaming" in page.inner_text("#status")

    # A whole mp3 file, played by the audio element.
    page.select_option("#format", "mp3")
    page.select_option("#stream", "false")
    page.click("#speak-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    page.wait_for_function("document.getElementById('player').duration > 2", timeout=20_000)

    # Multi-speaker, with the example dialogue the page fills in from the voice list.
    page.click("nav button[data-tab=dialogue]")
    assert "<role:" in page.input_value("#dialogue-text")
    page.select_option("#format", "pcm")
    page.select_option("#stream", "true")
    page.click("#dialogue-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    assert page.evaluate("window.flashtts.lastSamples") > 2 * 150 * 320

    # Add a role from a file, then delete it.
    ref = tmp_path / "voice.wav"
    ref.write_bytes(reference_wav)
    page.click("nav button[data-tab=roles]")
    page.fill("#role-name", "from-browser")
    page.set_input_files("#role-file", str(ref))
    page.click("#role-add")
    page.wait_for_selector("button[data-delete='from-browser']")
    assert (spark_server.role_dir / "from-browser").is_dir()
    page.click("button[data-delete='from-browser']")
    page.wait_for_selector("button[data-delete='from-browser']", state="detached")
    assert not (spark_server.role_dir / "from-browser").exists()

    # Clone from an uploaded file.
    page.click("nav button[data-tab=clone]")
    page.set_input_files("#clone-file", str(ref))
    page.click("#clone-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    assert page.evaluate("window.flashtts.lastBytes") > 0
    assert "error" not in (page.get_attribute("#status", "class") or "")

    # Clone from the microphone: record, stop, and clone with the recording (no file chosen).
    page.set_input_files("#clone-file", [])
    page.click("#record")
    page.wait_for_function("document.getElementById('record-state').textContent.startsWith('recording')")
    page.wait_for_timeout(2500)
    page.click("#record")
    page.wait_for_function("window.flashtts.recording !== null")
    page.click("#clone-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    assert page.evaluate("window.flashtts.lastBytes") > 0, page.inner_text("#status")
    assert page.problems == []


def test_page_sends_the_api_key(tiny_spark, tmp_path_factory, page):
    tmp = tmp_path_factory.mktemp("page-key")
    server = start_server(torch_server_args(tiny_spark, tmp, "--api_key", "page-key"), tmp)
    try:
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('server-info').textContent.includes('not connected')")
        assert "API key" in page.inner_text("#status")
        page.fill("#api-key", "page-key")
        page.click("#save-key")
        page.wait_for_function("window.flashtts.voices.length > 0")
        page.fill("#max-tokens", "50")
        page.click("#speak-go")
        page.wait_for_function("window.flashtts.done", timeout=60_000)
        assert page.evaluate("window.flashtts.lastSamples") == 50 * 320
        # The only console errors are the browser's own notes on the first, keyless 401s.
        assert all("401" in problem for problem in page.problems), page.problems
    finally:
        server.stop()


def test_live_tab_types_word_by_word_over_the_websocket_and_plays_as_it_arrives(spark_server, page):
    """The Live tab: Cartesia's WebSocket, one word per message, pcm_f32le chunks scheduled on Web Audio as
    they arrive; each sentence as long as its speaking-rate bound on the tiny model; Stop cancels."""
    import math

    import httpx
    from flashtts_core.speaking_rate import max_speech_seconds

    page.goto(spark_server.url + "/")
    page.wait_for_function("window.flashtts.voices.length > 0")
    page.click("nav button[data-tab=live]")
    sentences = ["Hello there, my friend.", "How are you today?"]
    page.fill("#live-text", " ".join(sentences))
    page.fill("#live-interval", "20")
    page.select_option("#live-voice", "female")
    page.click("#live-go")
    page.wait_for_function("window.flashtts.done", timeout=60_000)
    live = page.evaluate("window.flashtts.live")
    samples = page.evaluate("window.flashtts.lastSamples")
    assert "error" not in (page.get_attribute("#status", "class") or ""), page.inner_text("#status")
    expected = sum(math.ceil(max_speech_seconds(s) * 50) * 320 for s in sentences)  # 16 kHz, 20 ms tokens
    assert samples == expected and live["chunks"] == page.evaluate("window.flashtts.scheduled") > 2
    assert live["words"] == 8 and live["timestamps"] == " ".join(sentences).split()
    assert "played as they arrived" in page.inner_text("#status")

    # Stop after the first audio of a long text: the context is cancelled and its generation freed.
    page.fill("#live-text", " ".join(["Somewhere beyond the distant mountains the travellers kept walking."] * 4))
    page.click("#live-go")
    page.wait_for_function("window.flashtts.live.chunks > 0", timeout=60_000)
    page.click("#live-stop")
    page.wait_for_function("window.flashtts.done")
    assert "stopped" in page.inner_text("#status")
    for _ in range(200):
        if httpx.get(spark_server.url + "/server_info", timeout=10).json()["active_generations"] == 0:
            break
        page.wait_for_timeout(20)
    else:
        raise AssertionError("the stopped context's generation was not freed")
    assert page.problems == []
