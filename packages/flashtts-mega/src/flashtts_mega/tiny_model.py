"""A tiny randomly initialised MegaTTS3 model directory in the released layout (its audio is noise).

Layout, as the released checkpoint::

    aligner_lm/            config.yaml + model_only_last.ckpt  {"state_dict": {"model": ...}}
    duration_lm/           config.yaml + model_only_last.ckpt  {"state_dict": {"dur_model": ...}}
    diffusion_transformer/ config.yaml + model_only_last.ckpt  {"state_dict": {"dit": ...}}
    wavvae/                config.yaml + decoder.ckpt           {"state_dict": {"model_gen": ...}}
    g2p/                   a Hugging Face Qwen2ForCausalLM + tokenizer with <Reserved_TTS_k> tokens
    example.wav, example.npy   a reference clip (24 kHz) and its latent [1, T, 32], as upstream's assets/

Every folder is written here: ``write_tiny_aligner``, ``write_tiny_duration``, ``write_tiny_dit``,
``write_tiny_wavvae``, ``write_tiny_g2p`` and ``write_example``; the ``write_random_*`` writers take
any :mod:`config` (by default the released sizes: the full-size benches use them). Each config.yaml
holds its configuration's ``to_dict()`` (upstream's keys where upstream has them), so the loader reads
the sizes back from it as well as from the tensors, and the checkpoints load strictly into the model
classes, as a released checkpoint does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .aligner import Aligner, pad_reference
from .checkpoint import save_checkpoint, write_config
from .config import AlignerConfig, DiTConfig, DurationConfig, ModelConfig, WaveVAEConfig
from .dit import DiT
from .duration import DurationModel
from .g2p import MIN_RESERVED_TOKENS, RESERVED_TTS_0
from .layout import SAMPLE_RATE
from .phones import (
    ALIGN_BOS,
    ALIGN_EOS,
    G2P_START_OFFSET,
    G2P_STOP_OFFSET,
    OTHER_PHONE_FIRST,
    SIL_ID,
    TIMESTAMP_OFFSET,
)
from .reference import LATENT_CHANNELS, example_latent_frames
from .wavvae import WaveVAEDecoder

logger = logging.getLogger("flashtts.mega")

EXAMPLE_WAV = "example.wav"
EXAMPLE_LATENT = "example.npy"
EXAMPLE_SECONDS = 2.0
RESERVED_TOKENS = 1024

ALIGNER_TINY = AlignerConfig(
    n_state=32, n_audio_head=2, n_audio_layer=1, n_text_head=2, n_text_layer=1, n_text_ctx=1024
)
DURATION_TINY = DurationConfig(
    hidden_size=32,
    dec_hidden_size=64,
    num_layers=2,
    code_size=128,
    enc_ffn_hidden_size=64,
    enc_num_heads=2,
    enc_layers=1,
    char_dict_size=64,
    use_ph_pos_embed=True,
)
# DiT: 1.3M parameters; two heads of upstream's head width 64.
DIT_TINY = DiTConfig(
    encoder_dim=128,
    encoder_n_layers=2,
    encoder_n_heads=2,
    ffn_dim=256,
    local_cond_dim=32,
    ph_encoder_filter=128,
    ph_encoder_heads=2,
    ph_encoder_layers=2,
)
# WaveVAE: narrow channels, upstream's up-sampling factors: 25 latent frames still decode to 24,000 samples.
WAVVAE_TINY = WaveVAEConfig(decoder_dim=32, ngf=4)


def _save(folder: Path, config: ModelConfig, state_dict) -> None:
    """``folder/config.yaml`` (the configuration) and its checkpoint, in upstream's format."""
    write_config(Path(folder), config.to_dict())
    save_checkpoint(Path(folder) / config.CHECKPOINT, config.INNER_KEY, state_dict)


def write_random_aligner(folder: Path, seed: int = 0, config: AlignerConfig = AlignerConfig()) -> None:
    """``aligner_lm/``: a random aligner (PyTorch's initialisation) of ``config``'s sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Aligner.from_config(config)
        nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # a parameter left uninitialised
    _save(folder, config, model.state_dict())


def write_scripted_aligner(
    folder: Path,
    reference: np.ndarray,
    seed: int = 0,
    config: AlignerConfig = AlignerConfig(),
    phones_per_second: float = 12.0,
) -> None:
    """``aligner_lm/``: an aligner of ``config``'s sizes whose greedy decoder writes one fixed, well-formed
    alignment whatever the audio: English phones of even length over the mel frames of ``reference``
    (a padded 24 kHz reference, ``pad_reference``), then EOS.

    A random aligner's free greedy loop (upstream's ``align``) runs to its 768-token bound and leaves
    an odd, unsplittable sequence; this one lets upstream's own CLI run on a random checkpoint, with a
    realistic number of decode steps for ours and upstream's. Its decoder blocks add nothing (their
    output projections are zero); each position's embedding turns the token there into the next one,
    which the output projection (the token embeddings; the script's tokens alone unpenalised) picks out."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Aligner.from_config(config)
        frames = int(model.mel(reference).shape[1])
        decoder = model.decoder
        n = max(1, round(frames / 100 * phones_per_second))
        ends = [round(frames * (i + 1) / n) for i in range(n)]
        english = torch.randint(OTHER_PHONE_FIRST, SIL_ID, (n,)).tolist()
        tokens = [ALIGN_BOS, *(t for ph, end in zip(english, ends) for t in (ph, TIMESTAMP_OFFSET + end)), ALIGN_EOS]
        with torch.no_grad():
            emb = torch.randn_like(decoder.token_embedding.weight)
            decoder.token_embedding.weight.copy_(emb)
            decoder.out_proj.weight.copy_(emb)
            decoder.out_proj.bias.fill_(-1e4)  # only the script's tokens compete (narrow test configs)
            decoder.out_proj.bias[torch.tensor(tokens)] = 0.0
            nn.init.normal_(decoder.positional_embedding, std=0.02)
            for pos, (here, after) in enumerate(zip(tokens, tokens[1:])):
                decoder.positional_embedding[pos] = 4 * emb[after] - emb[here]
            for block in decoder.blocks:
                for proj in (block.attn.out, block.cross_attn.out, block.mlp[2]):
                    proj.weight.zero_()
                    proj.bias.zero_()
    _save(folder, config, model.state_dict())


def write_tiny_aligner(folder: Path, seed: int = 0) -> None:
    """``aligner_lm/``: a tiny random aligner (ALIGNER_TINY) in upstream's layout."""
    write_random_aligner(folder, seed, ALIGNER_TINY)


def write_random_duration(folder: Path, seed: int = 0, config: DurationConfig = DurationConfig()) -> None:
    """``duration_lm/``: a random duration model (PyTorch's initialisation), config.yaml with upstream's keys."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DurationModel.from_config(config)
    _save(folder, config, model.state_dict())


def write_tiny_duration(folder: Path, seed: int = 0) -> None:
    """``duration_lm/``: a tiny random duration model (DURATION_TINY) in upstream's layout."""
    write_random_duration(folder, seed, DURATION_TINY)


def _dit_random_weight(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Fan-in scaled normal weights, small biases, unit norm gains: bounded outputs over many steps."""
    if name.endswith("gamma"):
        return torch.ones(shape)
    if len(shape) == 1:
        return torch.randn(shape, generator=gen) * 0.02
    return torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))


def write_random_dit(folder: Path, seed: int = 0, config: DiTConfig = DiTConfig()) -> None:
    """``diffusion_transformer/``: a random DiT of ``config``'s sizes (default: the released ones).

    Its config.yaml also holds win_size and frames_multiple, which upstream reads from this folder."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only
        shapes = {k: v.shape for k, v in DiT.from_config(config).state_dict().items()}
    _save(folder, config, {k: _dit_random_weight(k, shape, gen) for k, shape in shapes.items()})


def write_tiny_dit(folder: Path, seed: int = 0) -> None:
    """``diffusion_transformer/``: a tiny random DiT (DIT_TINY, 5 MB) in upstream's layout."""
    write_random_dit(folder, seed, DIT_TINY)


def write_random_wavvae(folder: Path, seed: int = 0, config: WaveVAEConfig = WaveVAEConfig()) -> None:
    """``wavvae/``: a random WaveVAE decoder of ``config``'s sizes (default: the released ones)."""
    gen = torch.Generator().manual_seed(seed)
    model = WaveVAEDecoder.from_config(config)
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith("weight_g"):
            # Unit-norm filters: the decoder's activations stay in range through 4 up-sampling stages.
            state[name] = torch.ones(value.shape)
        elif value.dim() == 1:
            state[name] = torch.randn(value.shape, generator=gen) * 0.01
        else:
            state[name] = torch.randn(value.shape, generator=gen) / math.sqrt(math.prod(value.shape[1:]))
    _save(folder, config, state)


def write_tiny_wavvae(folder: Path, seed: int = 0) -> None:
    """``wavvae/``: a tiny random WaveVAE decoder (WAVVAE_TINY) in upstream's layout."""
    write_random_wavvae(folder, seed, WAVVAE_TINY)


def write_tiny_g2p(folder: Path, seed: int = 0) -> None:
    """``g2p/``: a tiny Qwen2 whose tokenizer has ``<BOT>``, ``<BOS>`` and ``<Reserved_TTS_0..1023>``."""
    from flashtts_core.tiny_llm import write_tiny_qwen

    assert RESERVED_TOKENS >= MIN_RESERVED_TOKENS
    extra = ["<BOT>", "<BOS>"] + [f"<Reserved_TTS_{k}>" for k in range(RESERVED_TOKENS)]
    write_tiny_qwen(
        folder,
        extra,
        lambda tokenizer: [tokenizer.convert_tokens_to_ids(RESERVED_TTS_0) + G2P_STOP_OFFSET, tokenizer.eos_token_id],
        max_position_embeddings=4096,
        seed=seed,
    )
    _tokenizer_config_for_transformers4(Path(folder))


def write_scripted_g2p(folder: Path, phones: int = 40, seed: int = 0) -> list[int]:
    """``g2p/``: the tiny Qwen2 of :func:`write_tiny_g2p` scripted to write one fixed phone sequence
    whatever the text: after the start token ('sil'), ``phones`` distinct English phones, then the stop
    token. Returns the phone ids.

    Upstream's G2P runs to its stop token or 256 tokens, and a random one never stops: each segment
    would become 256 phones, and upstream bounds no segment's audio. The blocks add nothing (their
    output projections are zero), and an untied output head maps each scripted token to the next."""
    from safetensors.torch import load_file, save_file

    write_tiny_g2p(folder, seed=seed)
    folder = Path(folder)
    if not 1 <= phones <= SIL_ID - OTHER_PHONE_FIRST:
        raise ValueError(f"phones must be 1..{SIL_ID - OTHER_PHONE_FIRST}, got {phones}")
    gen = torch.Generator().manual_seed(seed)
    ids = (OTHER_PHONE_FIRST + torch.randperm(SIL_ID - OTHER_PHONE_FIRST, generator=gen)[:phones]).tolist()
    from transformers import AutoTokenizer

    reserved_0 = int(AutoTokenizer.from_pretrained(str(folder)).convert_tokens_to_ids(RESERVED_TTS_0))
    chain = [reserved_0 + t for t in (G2P_START_OFFSET, *ids, G2P_STOP_OFFSET)]
    weights = load_file(str(folder / "model.safetensors"))
    embed = weights["model.embed_tokens.weight"]
    head = torch.zeros_like(embed)
    for here, after in zip(chain, chain[1:]):
        embed[here] = torch.randn(embed.shape[1], generator=gen)
        head[after] = embed[here]
    for name, tensor in weights.items():
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            tensor.zero_()
    weights["lm_head.weight"] = head
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return ids


def _tokenizer_config_for_transformers4(folder: Path) -> None:
    """Make the tokenizer config one that transformers 4.x reads too (upstream pins <= 4.49, so
    bench/mega.py --upstream can load this folder): transformers 5 writes its own class name
    ``TokenizersBackend`` and a list of ``extra_special_tokens``, which 4.x cannot read. The generic
    fast class and ``additional_special_tokens`` give the same ids in both."""
    file = folder / "tokenizer_config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    elif extra:
        config["extra_special_tokens"] = extra
    file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def example_wav(seconds: float = EXAMPLE_SECONDS, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test clip: a 140 Hz harmonic series with syllable-rate amplitude changes and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    wav = 0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def write_example(path: Path, win_size: int, seed: int = 0) -> None:
    """``example.wav`` and ``example.npy``, a latent long enough for the padded clip."""
    import soundfile as sf

    wav = example_wav(seed=seed)
    sf.write(path / EXAMPLE_WAV, wav, SAMPLE_RATE, subtype="PCM_16")
    frames = example_latent_frames(len(pad_reference(wav, win_size)))
    latent = np.random.default_rng(seed + 1).standard_normal((1, frames, LATENT_CHANNELS)).astype(np.float32)
    np.save(path / EXAMPLE_LATENT, latent, allow_pickle=False)


def write_tiny_mega(path: Path, seed: int = 0) -> Path:
    """Every folder of a tiny MegaTTS3 model, plus the example reference, into ``path``."""
    start = time.perf_counter()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_tiny_aligner(path / "aligner_lm", seed=seed)
    write_tiny_duration(path / "duration_lm", seed=seed)
    write_tiny_dit(path / "diffusion_transformer", seed=seed)
    write_tiny_wavvae(path / "wavvae", seed=seed)
    write_tiny_g2p(path / "g2p", seed=seed)
    write_example(path, DIT_TINY.win_size, seed=seed)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    logger.info("tiny MegaTTS3 model written to %s (%.1f MB) in %.1f s", path, size / 1e6, time.perf_counter() - start)
    return path
