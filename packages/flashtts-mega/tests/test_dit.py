"""The DiT on a tiny random checkpoint in upstream's layout: strict loading and the sampler."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from flashtts_core.errors import ModelLoadError
from flashtts_mega.checkpoint import load_state_dict, read_config, save_checkpoint
from flashtts_mega.config import DiTConfig
from flashtts_mega.dit import CHECKPOINT, INNER_KEY, DiT, DiTInput, amo_step, sway_schedule
from flashtts_mega.tiny_model import DIT_TINY, write_tiny_dit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dit_dir(tiny_checkpoint):
    return tiny_checkpoint("diffusion_transformer", write_tiny_dit)


@pytest.fixture(scope="module")
def dit(tiny_dit_dir):
    return DiT.from_checkpoint(tiny_dit_dir)


def segment(phones: int, ref_frames: int, frames: int, seed: int, **kw) -> DiTInput:
    """A CFG triple shaped as upstream's prepare_inputs_for_dit builds it."""
    g = torch.Generator().manual_seed(seed)
    ph = torch.randint(1, 300, (1, phones), generator=g)
    tone = torch.randint(1, 30, (1, phones), generator=g)
    mel2ph = (torch.arange(4 * frames) * phones // (4 * frames) + 1)[None]  # 1-based, non-decreasing
    ref = torch.randn(1, ref_frames, 32, generator=g)
    lat_ctx = F.pad(ref.repeat(3, 1, 1), (0, 0, 0, frames - ref_frames))
    lat_ctx[1:] = 0
    ctx_mask = F.pad(torch.ones(3, ref_frames, 1), (0, 0, 0, frames - ref_frames))
    return DiTInput(
        phone=torch.cat([ph, ph, torch.full_like(ph, 301)]),
        tone=torch.cat([tone, tone, torch.full_like(tone, 31)]),
        lat_ctx=lat_ctx,
        ctx_mask=ctx_mask,
        dur=mel2ph.repeat(3, 1),
        **kw,
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tiny_checkpoint_has_upstreams_layout_and_loads_strictly(tiny_dit_dir, dit):
    assert sorted(p.name for p in tiny_dit_dir.iterdir()) == ["config.yaml", CHECKPOINT]
    raw = torch.load(tiny_dit_dir / CHECKPOINT, weights_only=True)
    assert list(raw["state_dict"]) == [INNER_KEY]
    file_keys = set(raw["state_dict"][INNER_KEY])
    assert file_keys == set(dit.state_dict())  # nothing missing, nothing unexpected
    # config.yaml holds the configuration, and the tensors' shapes agree with it
    assert DiTConfig.from_dict(read_config(tiny_dit_dir)) == DIT_TINY
    assert DiTConfig.from_dict({}, raw["state_dict"][INNER_KEY]) == DIT_TINY
    assert (tiny_dit_dir / CHECKPOINT).stat().st_size < 8_000_000
    assert not dit.training and not any(p.requires_grad for p in dit.parameters())


def test_sway_schedule_and_amo_step():
    t = sway_schedule(32)
    assert t[0] == 0 and t[-1] == pytest.approx(1.0) and bool((t[1:] > t[:-1]).all())
    # coefficient −1: t ↦ 1 − cos(πt/2), dense near 0
    assert torch.allclose(t, 1 - torch.cos(torch.pi / 2 * torch.linspace(0, 1, 33)), atol=1e-6)
    z, v, noise = torch.randn(4), torch.randn(4), torch.randn(4)
    # overshoot o = min(t' + 3(t' − t), 1), then a = t'/o, b = sqrt((1 − t')² − (a(1 − o))²)
    o = 0.2 + 3 * 0.1
    a = 0.2 / o
    b = math.sqrt(0.8**2 - (a * (1 - o)) ** 2)
    assert torch.allclose(amo_step(z, 0.1, 0.2, v, noise), a * (z + (o - 0.1) * v) + b * noise)
    # the last step lands on the prediction, without noise
    assert torch.allclose(amo_step(z, 0.9, 1.0, v, noise), z + 0.1 * v)


def test_same_seed_same_latent_batched_or_alone(dit):
    specs = [(12, 10, 24, 1), (30, 20, 40, 2), (5, 4, 9, 3)]
    alone = [dit.sample([segment(*s, generator=gen(s[3]))], time_step=3)[0] for s in specs]
    together = dit.sample([segment(*s, generator=gen(s[3])) for s in specs], time_step=3)
    for a, b, s in zip(alone, together, specs):
        assert a.shape == (s[2], 32) and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    again = dit.sample([segment(*specs[0], generator=gen(1))], time_step=3)[0]
    assert torch.equal(again, alone[0])
    other = dit.sample([segment(*specs[0], generator=gen(7))], time_step=3)[0]
    assert not torch.allclose(other, alone[0])


def test_per_request_settings_in_one_batch(dit):
    a = dict(time_step=2, p_w=1.0, t_w=1.0)
    alone_a = dit.sample([segment(12, 10, 20, 1, generator=gen(1))], **a)[0]
    alone_b = dit.sample([segment(20, 8, 30, 2, generator=gen(2))], time_step=4)[0]
    mixed = dit.sample(
        [segment(12, 10, 20, 1, generator=gen(1), **a), segment(20, 8, 30, 2, generator=gen(2))], time_step=4
    )
    assert torch.allclose(mixed[0], alone_a, atol=1e-4) and torch.allclose(mixed[1], alone_b, atol=1e-4)


def test_fresh_noise_every_step(dit):
    # one initial draw plus one per step, each of the request's own shape, from its own generator
    g = gen(5)
    dit.sample([segment(8, 6, 20, 1, generator=g)], time_step=4)
    expected = gen(5)
    for _ in range(1 + 4):
        torch.randn((1, 20, 32), generator=expected)
    assert torch.equal(g.get_state(), expected.get_state())


def test_guidance_combines_the_three_rows_as_upstream(dit):
    base = segment(10, 8, 16, 1)
    other_speaker = segment(10, 8, 16, 99)
    other_speaker.phone, other_speaker.tone, other_speaker.dur = base.phone, base.tone, base.dur

    def run(item, **w):
        item.generator = gen(3)
        return dit.sample([item], time_step=2, **w)[0]

    # t_w = 0: the speaker row (the only one that sees the reference latent) drops out...
    assert torch.allclose(run(base, p_w=1.6, t_w=0.0), run(other_speaker, p_w=1.6, t_w=0.0), atol=1e-5)
    # ...with t_w > 0 the reference latent steers the result
    assert not torch.allclose(run(base, p_w=1.6, t_w=2.5), run(other_speaker, p_w=1.6, t_w=2.5), atol=1e-3)
    # p_w = t_w = 0: only the unconditional row (mask tokens) counts, so the text does not matter
    other_text = segment(10, 8, 16, 1)
    other_text.phone = torch.cat([torch.randint(1, 300, (2, 10), generator=gen(4)), base.phone[2:]])
    assert torch.allclose(run(base, p_w=0.0, t_w=0.0), run(other_text, p_w=0.0, t_w=0.0), atol=1e-5)
    assert not torch.allclose(run(base, p_w=1.6, t_w=0.0), run(other_text, p_w=1.6, t_w=0.0), atol=1e-3)


def test_bfloat16_weights(tiny_dit_dir, dit):
    bf16 = DiT.from_checkpoint(tiny_dit_dir, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    out = bf16.sample([segment(12, 10, 20, 1, generator=gen(1))], time_step=3)[0]
    ref = dit.sample([segment(12, 10, 20, 1, generator=gen(1))], time_step=3)[0]
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: setattr(s, "dur", s.dur[:, :-4]), r"dur \(mel2ph\) must be \[3, 120\]"),
        (lambda s: setattr(s, "phone", s.phone[:2]), r"phone and tone must both be \[3, L\]"),
        (lambda s: setattr(s, "lat_ctx", s.lat_ctx[..., :16]), r"lat_ctx must be \[3, T, 32\]"),
        (lambda s: setattr(s, "ctx_mask", s.ctx_mask[:, :-1]), r"ctx_mask must be \[3, 30, 1\]"),
    ],
)
def test_malformed_inputs_are_refused(dit, change, message):
    item = segment(12, 10, 30, 1)
    change(item)
    with pytest.raises(ValueError, match=message):
        dit.sample([item])


def test_training_only_extras_are_dropped_but_strays_refused(tiny_dit_dir, tmp_path, caplog):
    state = load_state_dict(tiny_dit_dir / CHECKPOINT, INNER_KEY)
    folder = tmp_path / "extras"
    folder.mkdir()
    (folder / "config.yaml").write_text((tiny_dit_dir / "config.yaml").read_text())

    # wrapper prefixes, a derived RoPE table and tensors of a sub-module inference does not build
    extra = {"spk_encoder.proj.weight": torch.ones(2, 2), "encoder.layers.0.attention.q_norm.weight": torch.ones(4)}
    wrapped = {f"module.{k}": v for k, v in state.items()} | extra | {"encoder.freqs_cis": torch.ones(3, 2)}
    save_checkpoint(folder / CHECKPOINT, INNER_KEY, wrapped)
    with caplog.at_level(logging.INFO, logger="flashtts.mega"):
        DiT.from_checkpoint(folder)
    assert "3 training-only tensors" in caplog.text and "spk_encoder.proj.weight" in caplog.text

    # a tensor a module we build does not know, a missing one, a wrong shape: refused, named
    for bad, refusal in (
        (state | {"postnet.scale": torch.ones(1)}, r"unexpected keys: postnet\.scale"),
        ({k: v for k, v in state.items() if k != "postnet.bias"}, r"missing keys: postnet\.bias"),
        (state | {"prenet.bias": torch.ones(7)}, r"shape mismatches.*prenet\.bias"),
        ({k: v for k, v in state.items() if k != "x_prenet.weight"}, r"lacks tensor 'x_prenet\.weight'"),
    ):
        save_checkpoint(folder / CHECKPOINT, INNER_KEY, bad)
        with pytest.raises(ModelLoadError, match=refusal):
            DiT.from_checkpoint(folder)


def test_large_checkpoints_load_onto_meta_by_assignment(tiny_dit_dir, dit, monkeypatch):
    # the path full-size checkpoints take: built on meta, the loaded tensors become the parameters
    from flashtts_mega import checkpoint

    monkeypatch.setattr(checkpoint, "META_BUILD_PARAMETERS", 0)
    assigned = DiT.from_checkpoint(tiny_dit_dir)
    assert not any(p.is_meta for p in assigned.parameters())
    item = lambda: segment(8, 6, 12, 1, generator=gen(1))  # noqa: E731
    assert torch.equal(assigned.sample([item()], time_step=2)[0], dit.sample([item()], time_step=2)[0])
