"""Typed configurations of MegaTTS3's sub-models, as ``transformers``' ``*Config`` classes are.

One frozen dataclass per sub-folder of the released model: :class:`AlignerConfig` (``aligner_lm/``),
:class:`DurationConfig` (``duration_lm/``), :class:`DiTConfig` (``diffusion_transformer/``) and
:class:`WaveVAEConfig` (``wavvae/``); the ``g2p/`` LLM carries its own Hugging Face ``config.json``.
Field defaults are the released model's sizes, and each field is a constructor argument of its model.

Where a setting comes from (``from_checkpoint(folder)``, or ``from_dict(config_yaml, state_dict)``):

1. the released sizes (the defaults): upstream hard-codes the aligner's, the DiT's and the WaveVAE's
   in Python, so the released ``config.yaml`` of those folders does not hold them;
2. the folder's ``config.yaml``: our field names, and upstream's keys where upstream has one
   (``duration_lm``'s ``dur_txt_hs`` … , ``wavvae``'s ``melgan_config.use_tanh``); keys of neither
   kind (upstream's training settings) are ignored. The tiny-model writer writes every field;
3. the checkpoint's tensors, for every size that shows in a shape: those are what must load strictly.

Settings no shape shows (head counts, ``win_size``, ``frames_multiple``, ``use_ph_pos_embed`` …)
thus come from ``config.yaml`` or the defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import torch
from flashtts_core.errors import ModelLoadError

from . import phones
from .checkpoint import read_folder
from .rel_transformer import rel_transformer_sizes

StateDict = Mapping[str, torch.Tensor]
C = TypeVar("C", bound="ModelConfig")

DIT_HEAD_DIM = 64  # upstream's DiT head width: the head count when config.yaml does not say


def _coerce(cls_name: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` as the field's type, or a ModelLoadError naming the setting."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    elif origin is dict:
        ok = isinstance(value, Mapping) and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
        value = {str(k): v for k, v in value.items()} if ok else value
    if not ok:
        raise ModelLoadError(f"{cls_name}: {name} must be {hint}, found {value!r}")
    return value


class ModelConfig:
    """What the four configurations share: construction from mappings and from a checkpoint folder."""

    CHECKPOINT: typing.ClassVar[str]  # the checkpoint file in the folder, upstream's name
    INNER_KEY: typing.ClassVar[str]  # its state dict's key under "state_dict"

    @classmethod
    def _typed(cls: type[C], values: Mapping[str, Any]) -> C:
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _coerce(cls.__name__, k, hints[k], v) for k, v in values.items() if k in names})

    @classmethod
    def from_dict(
        cls: type[C], config: Mapping[str, Any], state_dict: Optional[StateDict] = None, source: str = ""
    ) -> C:
        """A folder's ``config.yaml`` (upstream's keys or ours), sizes that show in ``state_dict``'s
        tensor shapes taken from them; the released sizes for the rest. ``source`` names the
        checkpoint in errors."""
        values = dict(cls._settings(config))
        if state_dict is not None:
            try:
                values |= cls._shapes(state_dict, values)
            except KeyError as exc:
                raise ModelLoadError(cls._layout_error(source or "the checkpoint", exc.args[0])) from exc
        return cls._typed(values)

    @classmethod
    def read(cls: type[C], folder: Path) -> tuple[C, Path, dict[str, torch.Tensor]]:
        """``(config, checkpoint file, state dict)`` of a sub-folder in upstream's layout."""
        raw, file, state_dict = read_folder(Path(folder), cls.CHECKPOINT, cls.INNER_KEY)
        return cls.from_dict(raw, state_dict, source=str(file)), file, state_dict

    @classmethod
    def from_checkpoint(cls: type[C], folder: Path) -> C:
        """The configuration of the model saved in ``folder`` (config.yaml and the checkpoint's shapes)."""
        return cls.read(folder)[0]

    def to_dict(self) -> dict[str, Any]:
        """Every field under its own name, as ``config.yaml`` holds it (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    def model_kwargs(self) -> dict[str, Any]:
        """The model constructor's arguments (the fields that are not folder-level settings)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self._not_model_args()}  # type: ignore[call-overload]

    # -- per configuration ----------------------------------------------------------------------

    @classmethod
    def _settings(cls, config: Mapping[str, Any]) -> Mapping[str, Any]:
        """config.yaml's values under field names (default: the field names themselves)."""
        return config

    @classmethod
    def _shapes(cls, state_dict: StateDict, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The sizes that show in the tensors' shapes."""
        return {}

    @classmethod
    def _not_model_args(cls) -> frozenset[str]:
        return frozenset()

    @classmethod
    def _layout_error(cls, source: str, missing: str) -> str:
        return f"{source} lacks tensor {missing!r} needed to size the model"


def _count(state_dict: StateDict, template: str) -> int:
    n = 0
    while template.format(n) in state_dict:
        n += 1
    return n


@dataclass(frozen=True)
class AlignerConfig(ModelConfig):
    """``aligner_lm/``: the Whisper-like aligner (upstream ``Whisper()``, sizes hard-coded there)."""

    CHECKPOINT = "model_only_last.ckpt"
    INNER_KEY = "model"

    n_mels: int = 80
    n_audio_ctx: int = 3000
    n_text_ctx: int = 2048
    n_vocab: int = 6800
    n_state: int = 512
    n_audio_head: int = 8
    n_audio_layer: int = 6
    n_text_head: int = 8
    n_text_layer: int = 6

    @classmethod
    def _shapes(cls, state_dict: StateDict, settings: Mapping[str, Any]) -> dict[str, Any]:
        conv1 = state_dict["encoder.conv1.weight"]
        return {
            "n_mels": int(conv1.shape[1]),
            "n_state": int(conv1.shape[0]),
            "n_audio_ctx": int(state_dict["encoder.positional_embedding"].shape[0]),
            "n_text_ctx": int(state_dict["decoder.positional_embedding"].shape[0]),
            "n_vocab": int(state_dict["decoder.token_embedding.weight"].shape[0]),
            "n_audio_layer": _count(state_dict, "encoder.blocks.{}.attn.query.weight"),
            "n_text_layer": _count(state_dict, "decoder.blocks.{}.attn.query.weight"),
        }


# duration_lm/config.yaml keys → DurationConfig fields: upstream's keys (``num_heads`` there is the
# phone encoder's), then ours for what upstream hard-codes or leaves to the tensors.
DURATION_KEYS = {
    "dur_model_type": "dur_model_type",
    "dur_txt_hs": "hidden_size",
    "dur_model_hidden_size": "dec_hidden_size",
    "dur_model_layers": "num_layers",
    "dur_code_size": "code_size",
    "lm_use_enc": "lm_use_enc",
    "ffn_hidden_size": "enc_ffn_hidden_size",
    "num_heads": "enc_num_heads",
    "enc_layers": "enc_layers",
    "enc_ffn_kernel_size": "enc_ffn_kernel_size",
    "enc_prenet": "enc_prenet",
    "enc_pre_ln": "enc_pre_ln",
    "char_dict_size": "char_dict_size",
    "use_ph_pos_embed": "use_ph_pos_embed",
    "use_pos_embed": "use_pos_embed",
    "use_post_ln": "use_post_ln",
    "lm_bias": "lm_bias",
    "frames_multiple": "frames_multiple",
    "dict_size": "dict_size",
    "dec_num_heads": "dec_num_heads",
    "enc_window_size": "enc_window_size",
    "use_bert_input": "use_bert_input",
}


@dataclass(frozen=True)
class DurationConfig(ModelConfig):
    """``duration_lm/``: upstream's ``ARDurPredictor``, sized by its config.yaml (upstream's keys).

    The released duration_lm/config.yaml is not in upstream's repository. The defaults follow the
    released encoder as a public print of the module shows it (rel_fft, 512 wide, 4 layers, FFN 1024
    with kernel 3, 174 phones); the decoder defaults (8 × 512, 128 codes) are an assumption. Every
    size that shows in a tensor is read from the checkpoint, so the real file loads whatever they are.
    """

    CHECKPOINT = "model_only_last.ckpt"
    INNER_KEY = "dur_model"

    dict_size: int = phones.PHONE_DICT_SIZE
    hidden_size: int = 512
    dec_hidden_size: int = 512
    num_layers: int = 8
    code_size: int = 128
    dec_num_heads: int = 8
    lm_use_enc: bool = True
    enc_ffn_hidden_size: int = 1024
    enc_num_heads: int = 4
    enc_layers: int = 4
    enc_ffn_kernel_size: int = 3
    enc_prenet: bool = True
    enc_pre_ln: bool = True
    enc_window_size: Optional[int] = 4
    char_dict_size: int = 4000
    # upstream's ARDurPredictor adds its phone positions whenever the encoder is on (lm_use_enc): a
    # config without them does not run there, so the released one has them
    use_ph_pos_embed: bool = True
    ling_label_dict_size: dict[str, int] = field(default_factory=lambda: {"tone": len(phones.tone_symbols()) - 3})
    use_bert_input: bool = False
    use_pos_embed: bool = False
    use_post_ln: bool = False
    lm_bias: bool = True
    dur_model_type: str = "ar"
    frames_multiple: int = 8

    @classmethod
    def _settings(cls, config: Mapping[str, Any]) -> Mapping[str, Any]:
        if not config.get("use_rot_embed", False):
            raise ModelLoadError(
                "duration_lm/config.yaml: upstream runs the duration model only with use_rot_embed: true"
            )
        for key in ("use_spk_embed", "use_spk_id", "use_spk_enc"):
            if config.get(key):
                raise ModelLoadError(
                    f"duration_lm/config.yaml: {key} is not supported (upstream builds no module for it)"
                )
        values = {f: config[k] for k, f in DURATION_KEYS.items() if k in config}
        if "mega_use_char" in config and not config["mega_use_char"]:
            values["char_dict_size"] = 0
        labels, label_sizes = config.get("ling_labels"), config.get("ling_label_dict_size")
        if isinstance(labels, list) and isinstance(label_sizes, list):
            values["ling_label_dict_size"] = dict(zip(labels, label_sizes))
        return values

    @classmethod
    def _shapes(cls, state_dict: StateDict, settings: Mapping[str, Any]) -> dict[str, Any]:
        code = state_dict["code_emb.weight"]
        sizes: dict[str, Any] = {
            "dec_hidden_size": int(code.shape[1]),
            "code_size": int(code.shape[0]) - 2,
            "num_layers": sum(
                1 for k in state_dict if k.startswith("layers.") and k.endswith(".op.layer_norm1.weight")
            ),
            "lm_bias": "layers.0.op.ffn.ffn_2.bias" in state_dict,
            "use_post_ln": "layer_norm.weight" not in state_dict,
            "use_pos_embed": "embed_positions._float_tensor" in state_dict,
            "use_bert_input": "bert_input_proj.weight" in state_dict,
            "dur_model_type": "ar_mse" if "project_out_dim.0.weight" in state_dict else "ar",
            "ling_label_dict_size": {
                k.split(".")[1]: int(v.shape[0]) - 3
                for k, v in state_dict.items()
                if k.startswith("ling_label_embed_layers.") and k.endswith(".weight")
            },
        }
        if "encoder.weight" in state_dict:
            return sizes | {
                "lm_use_enc": False,
                "dict_size": int(state_dict["encoder.weight"].shape[0]),
                "hidden_size": int(state_dict["encoder.weight"].shape[1]),
                "char_dict_size": int(state_dict["char_encoder.weight"].shape[0])
                if "char_encoder.weight" in state_dict
                else 0,
            }
        enc = rel_transformer_sizes(state_dict, "encoder.")
        return sizes | {
            "lm_use_enc": True,
            "dict_size": enc["n_vocab"],
            "hidden_size": enc["hidden_channels"],
            "enc_ffn_hidden_size": enc["filter_channels"],
            "enc_num_heads": enc["n_heads"],
            "enc_layers": enc["n_layers"],
            "enc_ffn_kernel_size": enc["kernel_size"],
            "enc_prenet": enc["prenet"],
            "enc_pre_ln": enc["pre_ln"],
            "enc_window_size": enc["window_size"],
            "char_dict_size": rel_transformer_sizes(state_dict, "char_encoder.")["n_vocab"]
            if "char_encoder.emb.weight" in state_dict
            else 0,
        }

    def to_dict(self) -> dict[str, Any]:
        """Upstream's keys (what its ``ARDurPredictor`` reads) where it has them, ours for the rest."""
        ours = super().to_dict()
        labels = ours["ling_label_dict_size"]
        return {
            **{k: ours[f] for k, f in DURATION_KEYS.items()},
            "use_rot_embed": True,
            "encoder_type": "rel_fft",
            "mega_use_char": self.char_dict_size > 0,
            "ling_labels": list(labels),
            "ling_label_dict_size": list(labels.values()),
            "use_spk_embed": False,
            "use_spk_id": False,
            "use_spk_enc": False,
            # read by upstream's ARDurPredictor though they change nothing at inference: the encoder's
            # dropout (eval mode) and the cap on phones it keeps (past any segment's)
            "dropout": 0.0,
            "max_tokens": 100000,
        }


@dataclass(frozen=True)
class DiTConfig(ModelConfig):
    """``diffusion_transformer/``: upstream's ``Diffusion()`` (sizes hard-coded there), plus two
    settings of upstream's config.yaml in this folder (the global hyperparameters upstream loads)."""

    CHECKPOINT = "model_only_last.ckpt"
    INNER_KEY = "dit"

    encoder_dim: int = 1024
    encoder_n_layers: int = 24
    encoder_n_heads: int = 16
    ffn_dim: int = 2048  # upstream's rule: 2 × encoder_dim rounded up to a multiple of 256
    local_cond_dim: int = 512
    ctx_mask_dim: int = 16
    in_channels: int = 32
    out_channels: int = 32
    max_seq_len: int = 16384
    time_freq_dim: int = 256
    ph_dict_size: int = 302
    tone_dict_size: int = 32
    ph_encoder_filter: int = 2048  # upstream's: 2 × encoder_dim
    ph_encoder_heads: int = 4
    ph_encoder_layers: int = 6
    ph_encoder_kernel: int = 3
    ph_encoder_window: Optional[int] = 4
    # not the network's: the reference wav is padded to win_size (upstream preprocess), and durations
    # to multiples of frames_multiple
    win_size: int = 960
    frames_multiple: int = 8

    @classmethod
    def _shapes(cls, state_dict: StateDict, settings: Mapping[str, Any]) -> dict[str, Any]:
        dim = int(state_dict["x_prenet.weight"].shape[0])
        ph = rel_transformer_sizes(state_dict, "ph_encoder.")
        return {
            "encoder_dim": dim,
            "encoder_n_layers": _count(state_dict, "encoder.layers.{}.attention.wq.weight"),
            # the head count shows in no shape: config.yaml if it says, else upstream's head width
            "encoder_n_heads": settings.get("encoder_n_heads", max(dim // DIT_HEAD_DIM, 1)),
            "ffn_dim": int(state_dict["encoder.layers.0.feed_forward.w1.weight"].shape[0]),
            "local_cond_dim": int(state_dict["local_cond_project.weight"].shape[0]),
            "ctx_mask_dim": int(state_dict["ctx_mask_proj.weight"].shape[0]),
            "in_channels": int(state_dict["x_prenet.weight"].shape[1]),
            "out_channels": int(state_dict["postnet.weight"].shape[0]),
            "time_freq_dim": int(state_dict["f5_time_embed.time_mlp.0.weight"].shape[1]),
            "ph_dict_size": int(ph["n_vocab"]),
            "tone_dict_size": int(state_dict["tone_embed.weight"].shape[0]),
            "ph_encoder_filter": int(ph["filter_channels"]),
            "ph_encoder_heads": int(ph["n_heads"]),
            "ph_encoder_layers": int(ph["n_layers"]),
            "ph_encoder_kernel": int(ph["kernel_size"]),
            "ph_encoder_window": ph["window_size"],
        }

    @classmethod
    def _not_model_args(cls) -> frozenset[str]:
        return frozenset({"win_size", "frames_multiple"})


@dataclass(frozen=True)
class WaveVAEConfig(ModelConfig):
    """``wavvae/``: the released decoder of upstream's ``WavVAE_V3`` (sizes hard-coded there);
    ``use_tanh`` is upstream's ``melgan_config.use_tanh``."""

    CHECKPOINT = "decoder.ckpt"
    INNER_KEY = "model_gen"

    latent_dim: int = 32
    decoder_dim: int = 320
    latent_upsample: int = 4
    ngf: int = 128
    ratios: tuple[int, ...] = (5, 4, 4, 3)
    num_band: int = 1
    use_tanh: bool = False

    @classmethod
    def _settings(cls, config: Mapping[str, Any]) -> Mapping[str, Any]:
        melgan = config.get("melgan_config") or {}
        if isinstance(melgan, Mapping) and "use_tanh" in melgan:
            return {"use_tanh": melgan["use_tanh"], **config}
        return config

    @classmethod
    def _shapes(cls, state_dict: StateDict, settings: Mapping[str, Any]) -> dict[str, Any]:
        proj = state_dict["proj_to_decoder.weight"]
        stages = 0
        while f"decoder.model_up.{2 + 2 * stages}.upsample.3.weight_v" in state_dict:
            stages += 1
        # the up-sampling factors leave no unambiguous trace in the shapes: their count must match
        ratios = tuple(settings.get("ratios", cls.ratios))
        if stages != len(ratios):
            raise KeyError(f"decoder.model_up: {stages} up-sampling stages where the config has {len(ratios)}")
        out_conv = state_dict[f"decoder.model_up.{4 + 2 * stages}.weight_v"]
        sizes = {
            "latent_dim": int(proj.shape[1]),
            "decoder_dim": int(proj.shape[0]),
            "ngf": int(out_conv.shape[1]),
            "num_band": int(out_conv.shape[0]),
        }
        if "use_tanh" not in settings:  # the final 1×1 conv exists only without tanh
            sizes["use_tanh"] = f"decoder.model_up.{5 + 2 * stages}.weight" not in state_dict
        return sizes

    @classmethod
    def _layout_error(cls, source: str, missing: str) -> str:
        return f"WaveVAE checkpoint {source} does not have the decoder's layout: {missing}"

    def to_dict(self) -> dict[str, Any]:
        """Our fields, and upstream's keys: hop_size × vae_stride samples per latent frame, melgan_config."""
        hop = 1
        for r in self.ratios:
            hop *= r
        return {
            **super().to_dict(),
            "vae_stride": self.latent_upsample,
            "hop_size": hop,
            "melgan_config": {"frame_shift": hop, "use_tanh": self.use_tanh},
        }
