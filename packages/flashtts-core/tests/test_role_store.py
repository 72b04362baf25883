import threading
import unicodedata

import numpy as np
import pytest
import soundfile as sf
from flashtts_core.errors import AudioDecodeError, Conflict, InvalidRequest, NotFound
from flashtts_core.role_store import RoleStore, validate_role_name


@pytest.mark.parametrize(
    "name",
    ["../etc", "a/b", "a\\b", ".hidden", "", " ", "x" * 65, "a..b", "ok.", "nul\x00", "\u0301a"]
    # Windows device names, and 64 four-byte letters (256 bytes: longer than a file name may be).
    + ["CON", "nul", "Com1", "lpt9.wav", "aux.txt", "\U00010400" * 64],
)
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidRequest):
        validate_role_name(name)


@pytest.mark.parametrize(
    "name", ["alice", "Bob Smith", "voice-2.v1", "小明", "tara_01", "नमस्ते", "สวัสดี", "مُحَمَّد", "名" * 64, "console"]
)
def test_good_names(name):
    assert validate_role_name(name) == name


def test_names_are_compared_in_nfc(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "Åsa"), unicodedata.normalize("NFD", "Åsa")
    assert nfc != nfd and validate_role_name(nfd) == nfc
    store = RoleStore(tmp_path)
    store.save(nfd, np.full(1600, 0.1, np.float32), 16000)
    assert store.names() == [nfc] and store.exists(nfd) and store.exists(nfc)


def test_concurrent_saves_without_overwrite_create_the_role_once(tmp_path):
    store = RoleStore(tmp_path)
    audio = np.full(1600, 0.1, np.float32)
    results: list[str] = []
    start = threading.Barrier(8)

    def save(i: int) -> None:
        start.wait()
        try:
            store.save("racer", audio * (i + 1) / 8, 16000, f"take {i}", overwrite=False)
            results.append("saved")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["saved"]
    assert store.names() == ["racer"]
    assert [p.name for p in tmp_path.iterdir()] == ["racer"]  # no temp or trash folders left
    store.save("racer", audio, 16000, "replaced")  # overwrite (the default) still replaces
    assert store.load("racer").text == "replaced"


def test_save_load_delete_roundtrip(tmp_path):
    store = RoleStore(tmp_path)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    store.save("alice", audio, 16000, "hello there", {"global_tokens": np.arange(32)}, engine="spark")
    again = RoleStore(tmp_path)  # a restart finds it
    assert again.names() == ["alice"]
    role = again.load("alice", engine="spark")
    np.testing.assert_array_equal(role.audio, audio)
    assert role.text == "hello there"
    np.testing.assert_array_equal(role.features["global_tokens"], np.arange(32))
    assert again.load("alice", engine="other").features == {}
    assert not list(tmp_path.glob(".tmp-*"))
    again.delete("alice")
    assert again.names() == []
    with pytest.raises(NotFound):
        again.delete("alice")


def test_dropped_in_folder_is_a_role(tmp_path):
    (tmp_path / "bob").mkdir()
    sf.write(tmp_path / "bob" / "bob_voice.wav", np.full(8000, 0.1, np.float32), 8000)
    (tmp_path / "bob" / "reference_text.txt").write_text("hi I am bob\n")
    store = RoleStore(tmp_path)
    role = store.load("bob")
    assert role.sample_rate == 8000 and role.text == "hi I am bob"
    store.save_features("bob", "spark", {"semantic_tokens": np.ones(5, np.int64)})
    assert store.load("bob", "spark").features["semantic_tokens"].tolist() == [1] * 5


def test_features_refuse_pickles(tmp_path):
    store = RoleStore(tmp_path)
    with pytest.raises(ValueError):
        store.save("x", np.ones(100, np.float32), 16000, None, {"bad": np.array([object()])}, engine="spark")
    assert store.names() == []
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_broken_dropped_in_role_is_a_clear_400_and_a_damaged_cache_is_ignored(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "voice.wav").write_bytes(b"not a wav at all")
    store = RoleStore(tmp_path)
    with pytest.raises(AudioDecodeError) as err:
        store.load("broken")
    assert err.value.status == 400 and err.value.param == "name" and "voice.wav" in err.value.message
    assert str(tmp_path) not in err.value.message  # no server paths in what a client reads
    store.save("cached", np.full(1600, 0.1, np.float32), 16000, None, {"a": np.arange(3), "b": np.arange(4)}, "spark")
    (tmp_path / "cached" / "cache" / "spark" / "a.npy").write_bytes(b"damaged")
    assert store.load("cached", "spark").features == {}  # recomputed from the audio, never half a set


def test_a_role_dir_removed_while_running_is_empty_and_recreated_on_save(tmp_path):
    import shutil

    store = RoleStore(tmp_path / "roles")
    shutil.rmtree(tmp_path / "roles")
    assert store.names() == [] and not store.exists("alice")
    store.save("alice", np.full(1600, 0.1, np.float32), 16000)
    assert store.names() == ["alice"]


def test_a_latent_is_kept_with_the_role_and_is_not_cache(tmp_path):
    store = RoleStore(tmp_path)
    latent = np.random.default_rng(0).standard_normal((1, 40, 32)).astype(np.float32)
    store.save(
        "mega", np.full(2400, 0.1, np.float32), 24000, latent=latent, features={"ph": np.arange(3)}, engine="mega"
    )
    role = RoleStore(tmp_path).load("mega", "mega")  # a new store: as after a restart
    assert role.latent is not None and role.latent.dtype == np.float32
    np.testing.assert_array_equal(role.latent, latent)
    assert set(role.features) == {"ph"}
    store.save("plain", np.full(2400, 0.1, np.float32), 24000)
    assert store.load("plain").latent is None


def test_an_unreadable_latent_names_the_role(tmp_path):
    store = RoleStore(tmp_path)
    store.save("mega", np.full(2400, 0.1, np.float32), 24000, latent=np.zeros((1, 4, 32), np.float32))
    (tmp_path / "mega" / "latent.npy").write_bytes(b"not an npy file")
    with pytest.raises(InvalidRequest, match="mega"):
        store.load("mega")
