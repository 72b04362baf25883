import os
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flashtts_core.errors import AudioDecodeError, Conflict, InvalidRequest, NotFound
from flashtts_core.role_store import open_role_store, validate_role_name


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
    store = open_role_store(tmp_path)
    store.save(nfd, np.full(1600, 0.1, np.float32), 16000)
    assert store.names() == [nfc] and store.exists(nfd) and store.exists(nfc)


def test_concurrent_saves_without_overwrite_create_the_role_once(tmp_path):
    store = open_role_store(tmp_path)
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
    store = open_role_store(tmp_path)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    store.save("alice", audio, 16000, "hello there", {"global_tokens": np.arange(32)}, engine="spark")
    again = open_role_store(tmp_path)  # a restart finds it
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
    store = open_role_store(tmp_path)
    role = store.load("bob")
    assert role.sample_rate == 8000 and role.text == "hi I am bob"
    store.save_features("bob", "spark", {"semantic_tokens": np.ones(5, np.int64)})
    assert store.load("bob", "spark").features["semantic_tokens"].tolist() == [1] * 5


def test_features_refuse_pickles(tmp_path):
    store = open_role_store(tmp_path)
    with pytest.raises(ValueError):
        store.save("x", np.ones(100, np.float32), 16000, None, {"bad": np.array([object()])}, engine="spark")
    assert store.names() == []
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_broken_dropped_in_role_is_a_clear_400_and_a_damaged_cache_is_ignored(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "voice.wav").write_bytes(b"not a wav at all")
    store = open_role_store(tmp_path)
    with pytest.raises(AudioDecodeError) as err:
        store.load("broken")
    assert err.value.status == 400 and err.value.param == "name" and "voice.wav" in err.value.message
    assert str(tmp_path) not in err.value.message  # no server paths in what a client reads
    store.save("cached", np.full(1600, 0.1, np.float32), 16000, None, {"a": np.arange(3), "b": np.arange(4)}, "spark")
    (tmp_path / "cached" / "cache" / "spark" / "a.npy").write_bytes(b"damaged")
    assert store.load("cached", "spark").features == {}  # recomputed from the audio, never half a set


def test_a_role_dir_removed_while_running_is_empty_and_recreated_on_save(tmp_path):
    import shutil

    store = open_role_store(tmp_path / "roles")
    shutil.rmtree(tmp_path / "roles")
    assert store.names() == [] and not store.exists("alice")
    store.save("alice", np.full(1600, 0.1, np.float32), 16000)
    assert store.names() == ["alice"]


def test_a_latent_is_kept_with_the_role_and_is_not_cache(tmp_path):
    store = open_role_store(tmp_path)
    latent = np.random.default_rng(0).standard_normal((1, 40, 32)).astype(np.float32)
    store.save(
        "mega", np.full(2400, 0.1, np.float32), 24000, latent=latent, features={"ph": np.arange(3)}, engine="mega"
    )
    role = open_role_store(tmp_path).load("mega", "mega")  # a new store: as after a restart
    assert role.latent is not None and role.latent.dtype == np.float32
    np.testing.assert_array_equal(role.latent, latent)
    assert set(role.features) == {"ph"}
    store.save("plain", np.full(2400, 0.1, np.float32), 24000)
    assert store.load("plain").latent is None


def test_an_unreadable_latent_names_the_role(tmp_path):
    store = open_role_store(tmp_path)
    store.save("mega", np.full(2400, 0.1, np.float32), 24000, latent=np.zeros((1, 4, 32), np.float32))
    (tmp_path / "mega" / "latent.npy").write_bytes(b"not an npy file")
    with pytest.raises(InvalidRequest, match="mega"):
        store.load("mega")


# -- a store shared by processes: local folder and S3 (moto's server on 127.0.0.1) ----------------


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path) -> str:
    """Where a shared store lives: a local folder, or a prefix of a new bucket on moto's S3 server."""
    if request.param == "folder":
        return str(tmp_path / "shared")
    return f"s3://{request.getfixturevalue('s3_bucket')}/roles"


def _tone(seconds: float, freq: float, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_the_version_stamp_is_a_content_hash_in_the_manifest(location):
    store = open_role_store(location)
    name, v1 = store.save_versioned("alice", _tone(0.5, 200), 16000, "one", {"t": np.arange(3)}, "spark")
    assert store.version("alice") == v1 == store.load("alice").version
    assert open_role_store(location).save_versioned("alice", _tone(0.5, 200), 16000, "one")[1] == v1  # same bytes
    other = open_role_store(location)  # another process's view
    _, v2 = store.save_versioned("alice", _tone(0.5, 300), 16000, "two")
    assert v2 != v1 and other.version("alice") == v2 and other.load("alice").text == "two"
    assert other.load("alice", "spark").features == {}  # the cache of version one is not this voice
    store.delete("alice")
    assert other.version("alice") is None and not other.exists("alice") and other.names() == []
    if not location.startswith("s3://"):
        assert not list(Path(location).iterdir())  # no temp, lock or trash files left


def test_features_computed_from_an_old_version_are_never_used(location):
    store = open_role_store(location)
    _, v1 = store.save_versioned("bob", _tone(0.5, 200), 16000, "one")
    store.save("bob", _tone(0.5, 300), 16000, "two")  # another replica overwrites meanwhile
    store.save_features("bob", "spark", {"t": np.arange(4)}, version=v1)  # tokens of the old voice
    assert store.load("bob", "spark").features == {}
    store.save_features("bob", "spark", {"t": np.arange(5)}, version=store.version("bob"))
    assert store.load("bob", "spark").features["t"].tolist() == list(range(5))


def _add_once(location: str, name: str, i: int, start: float, out) -> None:
    from flashtts_core.errors import Conflict
    from flashtts_core.role_store import open_role_store

    store = open_role_store(location)
    time.sleep(max(0.0, start - time.time()))  # all processes write at the same moment
    try:
        store.save(name, _tone(0.3, 150 + 10 * i), 16000, f"take {i}", overwrite=False)
        out.put(("saved", i))
    except Conflict:
        out.put(("conflict", i))


def test_processes_adding_one_new_name_at_once_save_it_once(location):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    open_role_store(location)
    for round_ in range(2):
        out = ctx.Queue()
        name, start = f"racer{round_}", time.time() + 1.0
        procs = [ctx.Process(target=_add_once, args=(location, name, i, start, out)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results = sorted(out.get(timeout=5) for _ in procs)
        assert [r for r, _ in results] == ["conflict"] * 3 + ["saved"], results
        winner = next(i for r, i in results if r == "saved")
        assert open_role_store(location).load(name).text == f"take {winner}"  # the winner's voice, whole


def test_a_reader_never_sees_half_of_an_overwrite(location):
    store, reader = open_role_store(location), open_role_store(location)
    voices = {f"take {i}": _tone(0.3, 150 + 50 * i) for i in range(2)}
    store.save("flip", voices["take 0"], 16000, "take 0")
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            i ^= 1
            store.save("flip", voices[f"take {i}"], 16000, f"take {i}")

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        for _ in range(40):
            role = reader.load("flip")
            np.testing.assert_array_equal(role.audio, voices[role.text])  # audio and text of one version
    finally:
        stop.set()
        writer.join()


def _write_roles(location: str, prefix: str, fd: int) -> None:
    """Save roles until killed; after each save returns, say so on ``fd``."""
    store = open_role_store(location)
    os.write(fd, b"ready\n")
    for i in range(10**6):
        audio = (0.3 * np.sin(np.arange(16000 * 8) * (0.05 + 0.001 * (i % 50)))).astype(np.float32)
        latent = np.full((1, 200, 32), i, np.float32)
        store.save(f"{prefix}-{i}", audio, 16000, f"text {i}", {"t": np.arange(1000 + i)}, "spark", latent=latent)
        os.write(fd, f"saved {i}\n".encode())


def test_a_writer_killed_at_random_moments_never_leaves_a_half_role(location):
    """SIGKILL a process saving roles, many times: every role it finished is there whole, nothing it
    did not finish is listed, and opening the store cleans what the killed writers left."""
    import multiprocessing
    import random
    import signal

    ctx = multiprocessing.get_context("fork")  # a forked writer starts at once: twenty kills stay cheap
    rng = random.Random(12)
    finished: set[str] = set()
    kills = 6 if location.startswith("s3://") else 20  # a forked S3 writer first opens its own client
    for kill in range(kills):
        read_fd, write_fd = os.pipe()
        proc = ctx.Process(target=_write_roles, args=(location, f"k{kill}", write_fd))
        proc.start()
        os.close(write_fd)
        with os.fdopen(read_fd) as lines:
            assert lines.readline().strip() == "ready"
            began = time.monotonic()
            first = lines.readline()  # one save done: the next is under way
            assert first.startswith("saved")
            finished.add(f"k{kill}-{first.split()[1]}")
            time.sleep(rng.uniform(0.0, 1.5) * (time.monotonic() - began))  # before, during or after the next
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            finished |= {f"k{kill}-{line.split()[1]}" for line in lines.read().splitlines() if line.startswith("saved")}
    store = open_role_store(location)
    if location.startswith("s3://"):
        store.cleanup(stale_after=0)  # no writer is alive: every unreferenced upload is abandoned
    names = set(store.names())
    assert finished <= names and len(names - finished) <= kills  # at most the one in flight at each kill
    assert len(finished) >= kills
    for name in names:
        role = store.load(name, "spark")
        i = int(name.split("-")[1])
        assert role.text == f"text {i}" and role.audio.size == 16000 * 8 and role.latent[0, 0, 0] == i
        assert role.features == {} or role.features["t"].size == 1000 + i
    if location.startswith("s3://"):
        data = {p.split("/")[-3] for p in store.fs.find(store._path(".data")) if "/cache/" not in p}
        assert data <= names  # no orphan uploads left after cleanup
    else:
        assert not [p.name for p in Path(location).iterdir() if p.name.startswith(".")]


def test_a_missing_bucket_is_a_clear_error_at_startup(s3_endpoint):
    with pytest.raises(InvalidRequest, match="no-such-bucket"):
        open_role_store("s3://no-such-bucket-r1/roles")


def test_a_dropped_in_folder_gets_a_new_stamp_when_its_files_change(tmp_path):
    (tmp_path / "carol").mkdir()
    sf.write(tmp_path / "carol" / "voice.wav", _tone(0.5, 200), 16000)
    store = open_role_store(f"file://{tmp_path}")  # a file:// URL is the local folder
    first = store.version("carol")
    store.save_features("carol", "spark", {"t": np.arange(3)})
    assert first is not None and store.load("carol", "spark").features["t"].tolist() == [0, 1, 2]
    time.sleep(0.01)
    sf.write(tmp_path / "carol" / "voice.wav", _tone(0.5, 400), 16000)  # replaced by hand
    assert store.version("carol") != first
    assert store.load("carol", "spark").features == {}  # tokens of the old clip are not used


def test_the_factory_opens_a_folder_or_an_object_store(location, tmp_path):
    from flashtts_core.role_store import FolderRoleStore, ObjectRoleStore, RoleStore

    kind = ObjectRoleStore if location.startswith("s3://") else FolderRoleStore
    assert type(open_role_store(location)) is kind
    assert type(open_role_store(f"file://{tmp_path / 'local'}")) is FolderRoleStore
    with pytest.raises(TypeError):
        RoleStore()  # the interface alone stores nothing
