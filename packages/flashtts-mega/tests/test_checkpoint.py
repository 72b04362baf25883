"""Reading upstream checkpoint folders: safe loading, prefixes, strictness, clear errors."""

from collections import OrderedDict

import pytest
import torch
from flashtts_core.errors import ModelLoadError
from flashtts_mega.checkpoint import (
    load_state_dict,
    load_strict,
    read_config,
    save_checkpoint,
    strip_wrappers,
    write_config,
)
from torch import nn


class Payload:
    """Any class: unpickling it would run arbitrary code paths."""


def test_round_trip_in_upstreams_format(tmp_path):
    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path / "m.ckpt", "dit", model.state_dict())
    raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert list(raw) == ["state_dict"] and list(raw["state_dict"]) == ["dit"]
    assert isinstance(raw["state_dict"]["dit"], OrderedDict)
    loaded = load_state_dict(tmp_path / "m.ckpt", "dit")
    assert set(loaded) == {"weight", "bias"} and torch.equal(loaded["weight"], model.weight)


def test_wrapper_prefixes_are_stripped_at_both_levels(tmp_path):
    weights = {"module._orig_mod.encoder.weight": torch.ones(2), "_orig_mod.bias": torch.zeros(1)}
    torch.save({"state_dict": {"module.dit": weights}}, tmp_path / "m.ckpt")
    assert set(load_state_dict(tmp_path / "m.ckpt", "dit")) == {"encoder.weight", "bias"}
    # only whole path components go: a name that merely contains the word stays
    assert strip_wrappers("submodule.weight") == "submodule.weight"
    assert strip_wrappers("encoder.module.layers.0.w") == "encoder.layers.0.w"


def test_a_file_that_needs_unpickling_is_refused_naming_it(tmp_path):
    file = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"dit": {"w": torch.ones(1)}}, "extra": Payload()}, file)
    with pytest.raises(ModelLoadError, match=r"evil\.ckpt.*arbitrary unpickling.*Payload"):
        load_state_dict(file, "dit")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint", "not a torch checkpoint"),
        (None, "does not exist"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    file = tmp_path / "bad.ckpt"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"bad\.ckpt.*{message}|{message}.*bad\.ckpt"):
        load_state_dict(file, "dit")


def test_wrong_structure_and_missing_inner_key(tmp_path):
    torch.save({"weights": {}}, tmp_path / "a.ckpt")
    with pytest.raises(ModelLoadError, match=r"a\.ckpt has no 'state_dict'"):
        load_state_dict(tmp_path / "a.ckpt", "dit")
    torch.save({"state_dict": {"model": {}}}, tmp_path / "b.ckpt")
    with pytest.raises(ModelLoadError, match=r"b\.ckpt has no state dict under 'state_dict' → 'dit'.*'model'"):
        load_state_dict(tmp_path / "b.ckpt", "dit")
    torch.save({"state_dict": {"dit": {"w": [1, 2]}}}, tmp_path / "c.ckpt")
    with pytest.raises(ModelLoadError, match="entry 'w' of 'dit' is not a tensor"):
        load_state_dict(tmp_path / "c.ckpt", "dit")


def test_load_strict_names_missing_unexpected_and_mismatched_keys():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    good = model.state_dict()
    load_strict(model, good, "test weights")  # no error

    missing = {k: v for k, v in good.items() if k != "1.bias"}
    with pytest.raises(ModelLoadError, match=r"test weights does not match.*missing keys: 1\.bias"):
        load_strict(model, missing, "test weights")
    unexpected = {**good, "2.weight": torch.ones(1)}
    with pytest.raises(ModelLoadError, match=r"unexpected keys: 2\.weight"):
        load_strict(model, unexpected, "test weights")
    wrong = {**good, "0.weight": torch.ones(4, 2)}
    with pytest.raises(ModelLoadError, match=r"shape mismatches.*0\.weight \(4, 2\) vs \(3, 2\)"):
        load_strict(model, wrong, "test weights")
    many = {f"extra.{i}": torch.ones(1) for i in range(20)}
    with pytest.raises(ModelLoadError, match=r"\(20 in all\)"):
        load_strict(model, {**good, **many}, "test weights")


def test_config_is_safe_yaml_naming_the_file(tmp_path):
    write_config(tmp_path / "dit", {"frames_multiple": 8, "nested": {"a": [1, 2]}})
    assert read_config(tmp_path / "dit") == {"frames_multiple": 8, "nested": {"a": [1, 2]}}
    with pytest.raises(ModelLoadError, match=r"cannot read .*nowhere.config\.yaml"):
        read_config(tmp_path / "nowhere")
    (tmp_path / "dit" / "config.yaml").write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ModelLoadError, match=r"config\.yaml is not valid YAML"):
        read_config(tmp_path / "dit")
    (tmp_path / "dit" / "config.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ModelLoadError, match="must hold a mapping"):
        read_config(tmp_path / "dit")
