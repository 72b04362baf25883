"""Spark-TTS's LLM vocabulary: the added tokens, their ids looked up in the model's own tokenizer,
and the prompts of the two tasks (voice cloning and controllable TTS) built as token ids.

The released tokenizer is Qwen2.5's (151,665 tokens) extended by upstream's tokenizer script with
``add_tokens`` in the order of :data:`ADDED_TOKENS`; ids are never hard-coded here, they are read
from whatever tokenizer the model directory holds (the tiny test model adds the same list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from flashtts_core.errors import ModelLoadError

NUM_GLOBAL_CODES = 4096  # residual FSQ levels [4]*6
NUM_SEMANTIC_CODES = 8192  # factorized VQ codebook
GLOBAL_TOKENS_PER_VOICE = 32
NUM_PITCH_VALUES = 1001
NUM_SPEED_VALUES = 11

GENDERS = {"female": 0, "male": 1}

# The structural tokens, in upstream's order (the last block of the extension).
STRUCTURE_TOKENS = (
    "<|task_vc|>",
    "<|task_tts|>",
    "<|task_asr|>",
    "<|task_s2s|>",
    "<|task_t2s|>",
    "<|task_cap|>",
    "<|task_understand|>",
    "<|task_controllable_tts|>",
    "<|task_prompt_tts|>",
    "<|task_edit|>",
    "<|start_content|>",
    "<|start_style_label|>",
    "<|start_style_prompt|>",
    "<|start_acoustic_token|>",
    "<|start_global_token|>",
    "<|start_semantic_token|>",
    "<|end_content|>",
    "<|end_style_label|>",
    "<|end_style_prompt|>",
    "<|end_acoustic_token|>",
    "<|end_global_token|>",
    "<|end_semantic_token|>",
)


def added_tokens() -> list[str]:
    """Every token Spark-TTS adds to Qwen2.5's vocabulary, in the released tokenizer's id order."""
    return (
        [f"<|bicodec_global_{i}|>" for i in range(NUM_GLOBAL_CODES)]
        + [f"<|bicodec_semantic_{i}|>" for i in range(NUM_SEMANTIC_CODES)]
        + [f"<|pitch_value_{i}|>" for i in range(NUM_PITCH_VALUES)]
        + [f"<|pitch_var_value_{i}|>" for i in range(11)]
        + [f"<|pitch_label_{i}|>" for i in range(5)]
        + [f"<|pitch_var_label_{i}|>" for i in range(5)]
        + [f"<|speed_value_{i}|>" for i in range(NUM_SPEED_VALUES)]
        + [f"<|speed_label_{i}|>" for i in range(5)]
        + [f"<|loudness_value_{i}|>" for i in range(31)]
        + [f"<|loudness_label_{i}|>" for i in range(5)]
        + [f"<|age_{i}|>" for i in range(5)]
        + [f"<|gender_{i}|>" for i in range(3)]
        + [f"<|emotion_{i}|>" for i in range(101)]
        + list(STRUCTURE_TOKENS)
    )


@dataclass(frozen=True)
class TokenRange:
    """A family of tokens ``<|prefix_0|> … <|prefix_{n-1}|>``: their ids and the reverse map."""

    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {token_id: i for i, token_id in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def id(self, code: int) -> int:
        return self.ids[code]

    def code(self, token_id: int) -> Optional[int]:
        """The code of ``token_id`` in this family, or None when it is not one of them."""
        return self._index.get(token_id)  # type: ignore[attr-defined]


class SparkVocabulary:
    """Token ids of one Spark-TTS tokenizer and the prompts built from them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()

        def one(token: str) -> int:
            token_id = vocab.get(token)
            if token_id is None:
                raise ModelLoadError(f"the LLM tokenizer has no {token} token: not a Spark-TTS tokenizer")
            return int(token_id)

        def family(prefix: str, n: int) -> TokenRange:
            return TokenRange(tuple(one(f"<|{prefix}_{i}|>") for i in range(n)))

        self.globals = family("bicodec_global", NUM_GLOBAL_CODES)
        self.semantics = family("bicodec_semantic", NUM_SEMANTIC_CODES)
        self.pitch_values = family("pitch_value", NUM_PITCH_VALUES)
        self.speed_values = family("speed_value", NUM_SPEED_VALUES)
        self.pitch_labels = family("pitch_label", 5)
        self.speed_labels = family("speed_label", 5)
        self.genders = family("gender", 2)
        self.task_tts = one("<|task_tts|>")
        self.task_controllable_tts = one("<|task_controllable_tts|>")
        self.start_content = one("<|start_content|>")
        self.end_content = one("<|end_content|>")
        self.start_style_label = one("<|start_style_label|>")
        self.end_style_label = one("<|end_style_label|>")
        self.start_acoustic = one("<|start_acoustic_token|>")
        self.end_acoustic = one("<|end_acoustic_token|>")
        self.start_global = one("<|start_global_token|>")
        self.end_global = one("<|end_global_token|>")
        self.start_semantic = one("<|start_semantic_token|>")
        self.end_semantic = one("<|end_semantic_token|>")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ModelLoadError("the LLM tokenizer has no EOS token")
        self.eos = int(eos)
        # Stop on <|end_semantic_token|> as upstream's servers do, and on EOS (<|im_end|>), which is
        # how the released model was trained to end its semantic tokens.
        self.stop_ids = tuple(sorted({self.end_semantic, self.eos}))
        self.semantic_phase_ids = tuple(self.semantics.ids)
        self.global_phase_ids = tuple(self.globals.ids)
        self.pitch_value_phase_ids = tuple(self.pitch_values.ids)
        self.speed_value_phase_ids = tuple(self.speed_values.ids)
        # Every id any phase lets the LLM emit (a backend may compute its output head over these only).
        self.output_ids = tuple(
            sorted(
                {
                    *self.semantic_phase_ids,
                    *self.global_phase_ids,
                    *self.pitch_value_phase_ids,
                    *self.speed_value_phase_ids,
                    *self.stop_ids,
                }
            )
        )

    # -- text -------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids; markup in the text is never read as Spark's control tokens.

        ``split_special_tokens`` covers special tokens; Spark's audio tokens are ordinary added
        tokens, so their ``<|`` opening is broken up first (it has nothing to say aloud anyway).
        """
        text = text.replace("<|", "< |")
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    # -- prompts ----------------------------------------------------------------------------------
    def clone_prompt(
        self,
        text: str,
        global_tokens: Sequence[int],
        semantic_tokens: Sequence[int] | None = None,
        reference_text: Optional[str] = None,
        pitch: Optional[int] = None,
        speed: Optional[int] = None,
    ) -> list[int]:
        """The voice-cloning prompt, ready for the model's first semantic token.

        ``<|task_tts|><|start_content|>{reference_text}{text}<|end_content|>`` [style labels]
        ``<|start_global_token|>`` 32 globals ``<|end_global_token|><|start_semantic_token|>``, then
        the reference's semantic tokens when its transcript is given. Without a transcript the
        model's own first output would be ``<|start_semantic_token|>``; it is appended here so that
        only semantic tokens need to be sampled.

        ``pitch`` / ``speed`` (levels 0..4) add a ``<|start_style_label|>`` block as the earlier
        FlashTTS release did; the released model was trained without labels in this task, so their
        effect is approximate. Both moderate (or unset) adds nothing.
        """
        content = (reference_text or "") + text
        ids = [self.task_tts, self.start_content, *self.encode_text(content), self.end_content]
        if (pitch is not None and pitch != 2) or (speed is not None and speed != 2):
            ids += [
                self.start_style_label,
                self.pitch_labels.id(2 if pitch is None else pitch),
                self.speed_labels.id(2 if speed is None else speed),
                self.end_style_label,
            ]
        ids += [self.start_global, *(self.globals.id(int(g)) for g in global_tokens), self.end_global]
        ids.append(self.start_semantic)
        if reference_text and semantic_tokens is not None:
            ids += [self.semantics.id(int(s)) for s in semantic_tokens]
        return ids

    def control_prompt(self, text: str, gender: int, pitch: int, speed: int) -> list[int]:
        """``<|task_controllable_tts|><|start_content|>{text}<|end_content|><|start_style_label|>``
        ``<|gender_g|><|pitch_label_p|><|speed_label_s|><|end_style_label|>`` — upstream's control
        prompt — followed by ``<|start_acoustic_token|>``, the model's own first output."""
        return [
            self.task_controllable_tts,
            self.start_content,
            *self.encode_text(text),
            self.end_content,
            self.start_style_label,
            self.genders.id(gender),
            self.pitch_labels.id(pitch),
            self.speed_labels.id(speed),
            self.end_style_label,
            self.start_acoustic,
        ]

    def control_voice_suffix(self, pitch_value: int, speed_value: int, global_tokens: Sequence[int]) -> list[int]:
        """What the model emits in control mode before its semantic tokens:
        ``<|pitch_value_v|><|speed_value_w|><|end_acoustic_token|><|start_global_token|>`` 32 globals
        ``<|end_global_token|><|start_semantic_token|>`` (after ``<|start_acoustic_token|>``)."""
        return [
            self.pitch_values.id(pitch_value),
            self.speed_values.id(speed_value),
            self.end_acoustic,
            self.start_global,
            *(self.globals.id(int(g)) for g in global_tokens),
            self.end_global,
            self.start_semantic,
        ]

    # -- parsing ----------------------------------------------------------------------------------
    def semantic_codes(self, token_ids: Sequence[int]) -> list[int]:
        """The BiCodec semantic codes among generated ids (anything else is skipped)."""
        codes = (self.semantics.code(int(t)) for t in token_ids)
        return [c for c in codes if c is not None]

    def global_codes(self, token_ids: Sequence[int]) -> list[int]:
        codes = (self.globals.code(int(t)) for t in token_ids)
        return [c for c in codes if c is not None]
