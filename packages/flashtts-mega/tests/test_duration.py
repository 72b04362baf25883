"""The AR duration model on a tiny random checkpoint in upstream's layout, prompted by a real alignment."""

import numpy as np
import pytest
import torch
from flashtts_core.errors import ModelLoadError
from flashtts_mega import phones
from flashtts_mega.aligner import Aligner, pad_reference
from flashtts_mega.alignment import ReferenceAlignment, length_regulate, mel2token_to_dur
from flashtts_mega.checkpoint import load_state_dict, read_config, save_checkpoint, write_config
from flashtts_mega.config import DurationConfig
from flashtts_mega.duration import CHECKPOINT, INNER_KEY, DurationModel
from flashtts_mega.tiny_model import DURATION_TINY, write_tiny_aligner, write_tiny_duration

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint("duration_lm", write_tiny_duration)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return DurationModel.from_checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def alignment(tiny_checkpoint):
    """The tiny aligner's reading of a 2 s recording: the prompt a real engine would build."""
    folder = tiny_checkpoint("aligner_lm", write_tiny_aligner)
    sr = 24000
    t = np.arange(2 * sr) / sr
    wav = (0.3 * np.sin(2 * np.pi * (150 + 300 * t) * t)).astype(np.float32)
    return Aligner.from_checkpoint(folder).align(pad_reference(wav, 1536))


# English phones and a comma, a full stop and 'sil' (ids from phones.json)
TEXT_PH = torch.tensor([[110, 120, 130, 163, 125, 135, 148, 140, 145]])
TEXT_TONE = torch.full_like(TEXT_PH, phones.EN_TONE_ID)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tiny_checkpoint_has_upstreams_layout_and_keys(tiny_dir, model):
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.yaml", CHECKPOINT]
    raw = torch.load(tiny_dir / CHECKPOINT, weights_only=True)
    assert list(raw["state_dict"]) == [INNER_KEY]
    config = read_config(tiny_dir)
    for key in ("dur_txt_hs", "dur_model_hidden_size", "dur_model_layers", "dur_code_size", "use_rot_embed"):
        assert key in config
    assert len(model.layers) == config["dur_model_layers"] and model.code_size == config["dur_code_size"]
    assert (tiny_dir / CHECKPOINT).stat().st_size < 2_000_000


def test_sizes_come_from_the_tensors(tiny_dir, tmp_path):
    state = load_state_dict(tiny_dir / CHECKPOINT, INNER_KEY)
    config = read_config(tiny_dir)
    sizes = DurationConfig.from_dict({**config, "dur_model_layers": 7, "dur_code_size": 3}, state)
    assert (sizes.num_layers, sizes.code_size, sizes.dec_hidden_size) == (2, 128, 64)
    assert (sizes.enc_layers, sizes.enc_num_heads, sizes.hidden_size, sizes.dict_size) == (1, 2, 32, 174)
    assert sizes.ling_label_dict_size == {"tone": 16} and sizes.char_dict_size == 64
    # without the tensors, config.yaml (upstream's keys) gives the same configuration
    assert DurationConfig.from_dict(config) == DurationConfig.from_dict(config, state) == DURATION_TINY


def test_strict_load_errors_name_the_keys(tiny_dir, tmp_path):
    state = load_state_dict(tiny_dir / CHECKPOINT, INNER_KEY)
    config = read_config(tiny_dir)
    write_config(tmp_path / "a", config)
    save_checkpoint(tmp_path / "a" / CHECKPOINT, INNER_KEY, {k: v for k, v in state.items() if k != "enc_proj.bias"})
    with pytest.raises(ModelLoadError, match="missing keys: enc_proj.bias"):
        DurationModel.from_checkpoint(tmp_path / "a")
    save_checkpoint(tmp_path / "a" / CHECKPOINT, INNER_KEY, {**state, "spk_embed_proj.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelLoadError, match="unexpected keys: spk_embed_proj.weight"):
        DurationModel.from_checkpoint(tmp_path / "a")
    write_config(tmp_path / "b", {**config, "use_rot_embed": False})
    save_checkpoint(tmp_path / "b" / CHECKPOINT, INNER_KEY, state)
    with pytest.raises(ModelLoadError, match="use_rot_embed"):
        DurationModel.from_checkpoint(tmp_path / "b")


def test_predicted_frames_cover_the_phones_in_multiples_of_8(model, alignment):
    prompt = model.prompt(alignment)
    assert prompt.length == alignment.ph.shape[1]
    for is_first, is_final in ((True, False), (False, True), (False, False)):
        mel2ph = model.predict(prompt, TEXT_PH, TEXT_TONE, is_first, is_final, generator=seeded(1))
        assert mel2ph.dtype == torch.long and mel2ph.shape[0] == 1 and mel2ph.shape[1] % 8 == 0
        dur = mel2token_to_dur(mel2ph, TEXT_PH.shape[1])[0]
        assert int(dur.sum()) == mel2ph.shape[1]
        assert bool((mel2ph[:, 1:] >= mel2ph[:, :-1]).all())
        assert int(dur[3]) >= 32 and int(dur[6]) >= 64  # '，' and '。' keep upstream's pause minimums
        if is_first:
            assert int(dur[0]) == 8
        if not is_final:
            assert int(dur[-1]) >= 32  # room for the crossfade into the next segment


def test_prompt_is_reused_never_changed_and_seed_reproduces(model, alignment):
    prompt = model.prompt(alignment)
    saved = [t.clone() for t in (*prompt.keys, *prompt.values, prompt.last_code)]
    first = model.predict(prompt, TEXT_PH, TEXT_TONE, False, False, generator=seeded(5))
    model.predict(prompt, TEXT_PH[:, :4], TEXT_TONE[:, :4], True, True, generator=seeded(6))
    again = model.predict(prompt, TEXT_PH, TEXT_TONE, False, False, generator=seeded(5))
    assert torch.equal(first, again)
    assert all(torch.equal(a, b) for a, b in zip(saved, (*prompt.keys, *prompt.values, prompt.last_code)))
    # a prompt rebuilt from the same alignment gives the same state
    rebuilt = model.prompt(alignment)
    assert all(torch.equal(a, b) for a, b in zip(prompt.keys, rebuilt.keys))


def test_cached_steps_equal_one_causal_pass(model, alignment):
    """The prompt's cache plus step-by-step decoding must equal a single causal pass over everything."""
    prompt = model.prompt(alignment)
    n = TEXT_PH.shape[1]
    step_outputs = []
    original = model._next_code

    def record(h, generator):
        step_outputs.append(h[:, -1])
        return original(h, generator)

    model._next_code = record
    try:
        model.predict(prompt, TEXT_PH, TEXT_TONE, False, False, dur_disturb=0.0)
    finally:
        model._next_code = original
    codes = [int(prompt.last_code)] + [int(model.project_out_dim(h).argmax(-1).clamp_min(1)) for h in step_outputs[:-1]]
    codes[1] = int(model.project_out_dim(step_outputs[0]).argmax(-1))  # the first step keeps its raw code
    ref_codes = mel2token_to_dur(alignment.mel2ph, alignment.ph.shape[1]).clamp(max=model.code_size - 1) + 1
    inputs = torch.cat([torch.tensor([[model.code_size + 1]]), ref_codes[:, :-1], torch.tensor([codes])], dim=1)
    x_ling = torch.cat([model.encode_text(alignment.ph, alignment.tone), model.encode_text(TEXT_PH, TEXT_TONE)], dim=1)
    total = inputs.shape[1]
    keys, values = model._kv_buffers(total, x_ling)
    with torch.inference_mode():
        full = model._run(model.code_emb(inputs) + x_ling, torch.arange(total), keys, values, 0, causal=True)
    assert torch.allclose(full[0, -n:], torch.cat(step_outputs), atol=1e-4)


def test_dur_alpha_scales_length(model, alignment):
    # upstream's post-processing on known codes: durations 10, 20, 30 (+32 before the next segment)
    codes = torch.tensor([[11, 21, 31]])
    ph = torch.tensor([[110, 120, 130]])
    lengths = [model.codes_to_mel2ph(codes, ph, False, False, 0.0, alpha, None).shape[1] for alpha in (0.5, 1.0, 2.0)]
    assert lengths == [48, 96, 184]  # round(d * alpha), then padded to a multiple of 8
    prompt = model.prompt(alignment)
    slow, normal = (
        model.predict(prompt, TEXT_PH, TEXT_TONE, False, False, dur_alpha=a, generator=seeded(3)).shape[1]
        for a in (1.5, 1.0)
    )
    assert slow > normal


def test_length_regulator_and_inverse():
    mel2ph = length_regulate(torch.tensor([[2, 0, 3]]))
    assert mel2ph.tolist() == [[1, 1, 3, 3, 3]]
    assert mel2token_to_dur(mel2ph, 3).tolist() == [[2, 0, 3]]


def test_bad_phone_input_is_a_value_error(model, alignment):
    prompt = model.prompt(alignment)
    with pytest.raises(ValueError, match="ph and tone"):
        model.predict(prompt, TEXT_PH, TEXT_TONE[:, :3], True, True)
    with pytest.raises(ValueError, match="ph and tone"):
        model.predict(prompt, TEXT_PH[0], TEXT_TONE[0], True, True)
    assert isinstance(ReferenceAlignment.from_arrays(alignment.to_arrays()), ReferenceAlignment)


def test_tiny_checkpoint_gives_upstreams_codes(model):
    """Upstream's ARDurPredictor (prompt via infer(return_state=True), then infer with a deep copy of
    that state, as make_dur_prompt / dur_pred do), loaded with this same tiny checkpoint, gave these
    codes and logits (computed once with upstream's code, 2026-12-02)."""
    mel2ph = torch.repeat_interleave(torch.arange(1, 7), torch.tensor([5, 9, 3, 12, 7, 4]))[None]
    reference = ReferenceAlignment(
        torch.tensor([[120, 3, 145, 130, 163, 140]]), torch.tensor([[3, 4, 3, 3, 3, 3]]), mel2ph
    )
    logits = []
    original = model._next_code

    def record(h, generator):
        logits.append(model.project_out_dim(h[:, -1])[0, [1, 64, 128]])
        return original(h, generator)

    model._next_code = record
    codes = {}
    original_post = model.codes_to_mel2ph
    model.codes_to_mel2ph = lambda c, *rest: codes.setdefault("codes", c)
    try:
        model.predict(
            model.prompt(reference), torch.tensor([[110, 150, 100, 148]]), torch.tensor([[3, 3, 13, 3]]), False, False
        )
    finally:
        model._next_code = original
        model.codes_to_mel2ph = original_post
    assert codes["codes"].tolist() == [[1, 126, 18, 90]]
    expected = [
        [1.504802942276001, 0.9917006492614746, 1.2294906377792358],
        [0.8247338533401489, -0.1789109855890274, -1.2137959003448486],
        [0.1349826157093048, -0.0462753027677536, 0.8165212273597717],
        [0.17527776956558228, -0.9314465522766113, 0.3793570101261139],
    ]
    assert torch.allclose(torch.stack(logits), torch.tensor(expected), atol=1e-5)
