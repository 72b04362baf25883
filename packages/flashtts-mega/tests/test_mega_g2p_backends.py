"""MegaTTS3's G2P through the sglang and tensorrt-llm adapters (their documented APIs' stand-ins, as
the backend suite runs them) gives the same phones as torch: greedy, legal phone tokens only."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest
from flashtts_core.backend import BackendConfig
from flashtts_core.errors import BackendUnavailable
from flashtts_core.plugins import get_plugin_manager
from flashtts_mega import phones
from flashtts_mega.g2p import G2P
from flashtts_mega.tiny_model import write_scripted_g2p, write_tiny_g2p

STANDINS = Path(__file__).resolve().parents[2] / "flashtts-backends" / "tests" / "standins"
STANDIN_MODULES = {"sglang": "sglang", "tensorrt-llm": "tensorrt_llm"}
TEXTS = ("Hi.", "你好，世界。")


@pytest.fixture(scope="module")
def g2p_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mega-g2p") / "g2p"
    write_tiny_g2p(folder)
    return folder


async def _phones(name: str, folder: Path) -> list[tuple[list[int], list[int]]]:
    cls = get_plugin_manager().backends[name]
    try:
        cls.check_available()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    device = "auto" if name in STANDIN_MODULES else "cpu"
    backend = await cls.create(BackendConfig(model_path=folder, device=device, torch_dtype="float32", max_length=512))
    try:
        g2p = G2P(G2P.load_tokenizer(folder), backend)
        out = []
        for text in TEXTS:
            ph, tone = await g2p.run(text)
            out.append((ph[0].tolist(), tone[0].tolist()))
        return out
    finally:
        await backend.close()


@pytest.fixture
def standin(monkeypatch):
    """Put an engine's stand-in on sys.path (when the real one is missing), and take it off again."""
    added: list[str] = []

    def use(name: str) -> None:
        module = STANDIN_MODULES[name]
        if importlib.util.find_spec(module) is None:
            monkeypatch.syspath_prepend(str(STANDINS))
            added.append(module)

    yield use
    for module in added:  # later suites must not take the stand-in for the real engine
        for key in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
            del sys.modules[key]


@pytest.mark.parametrize("name", ["sglang", "tensorrt-llm"])
def test_g2p_through_a_cuda_engine_adapter_matches_torch(name, g2p_dir, standin):
    standin(name)
    reference = asyncio.run(_phones("torch", g2p_dir))
    got = asyncio.run(_phones(name, g2p_dir))
    assert got == reference
    legal = set(phones.legal_phone_tokens())
    for (ph, tone), text in zip(got, TEXTS):
        assert ph[0] == phones.SIL_ID and len(ph) == len(tone) > 1, text
        assert all(p in legal or phones.ZH_PHONE_FIRST <= p <= phones.ZH_PHONE_LAST for p in ph)


def test_scripted_g2p_writes_its_phones_then_stops_on_the_torch_backend(tmp_path):
    """The full-size benches' G2P: the same phones for any text, then the stop token (upstream's
    greedy generate sees the same: its stop ends the sequence before the 256-token bound)."""
    script = write_scripted_g2p(tmp_path / "g2p", phones=12)
    assert len(set(script)) == 12

    async def run() -> list[list[int]]:
        cls = get_plugin_manager().backends["torch"]
        backend = await cls.create(
            BackendConfig(model_path=tmp_path / "g2p", device="cpu", torch_dtype="float32", max_length=512)
        )
        try:
            g2p = G2P(G2P.load_tokenizer(tmp_path / "g2p"), backend)
            return [(await g2p.run(text, max_tokens=200))[0][0].tolist() for text in ("Hi.", "A longer sentence here.")]
        finally:
            await backend.close()

    for ph in asyncio.run(run()):
        assert ph == [phones.SIL_ID, *script]
