"""MegaTTS3's phone/tone inventory and the token spaces built on it.

The inventory (``phones.json``) is the ``phone`` and ``tone`` lists of upstream's
``tts/utils/text_utils/dict.json`` (bytedance/MegaTTS3, Apache-2.0). Ids are list positions + 3:
ids 0-2 are the reserved ``<pad>``, ``<EOS>``, ``<UNK>`` (upstream's TokenTextEncoder).

Three id spaces meet here:

- *phone ids* (0..173) and *tone ids* (0..18): what the duration model and the DiT embed;
- *merged tokens*: what the G2P LLM and the aligner emit. A Chinese phone (ids 3..100) and its
  tone (1..6) merge into one token ``(phone - 3) * 6 + 200 + tone`` (201..788); every other phone
  (English, ``sil``, punctuation: 101..173) stays as it is and gets the English tone id 3;
- *timestamps* (aligner only): ``800 + frame`` marks where the phone before it ends, in 10 ms
  mel frames of the 16 kHz log-mel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import torch

RESERVED = ("<pad>", "<EOS>", "<UNK>")
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@cache
def _inventory() -> dict[str, list[str]]:
    data = json.loads((Path(__file__).with_name("phones.json")).read_text(encoding="utf-8"))
    return {"phone": list(RESERVED) + data["phone"], "tone": list(RESERVED) + data["tone"]}


def phone_symbols() -> list[str]:
    """Phone symbol of every phone id (index = id)."""
    return list(_inventory()["phone"])


def tone_symbols() -> list[str]:
    """Tone symbol of every tone id (index = id)."""
    return list(_inventory()["tone"])


def phone_id(symbol: str) -> int:
    """The id of a phone symbol (``<UNK>`` for one not in the inventory, as upstream)."""
    symbols = _inventory()["phone"]
    return symbols.index(symbol) if symbol in symbols else UNK_ID


# Sizes of the embedding tables upstream builds from the inventory.
PHONE_DICT_SIZE = 174  # len(RESERVED) + 171 phones: the duration model's ``encoder.emb`` rows
TONE_DICT_SIZE = 19  # len(RESERVED) + 16 tones

# Chinese phones (C0a .. C0＿) and their merged-token range.
ZH_PHONE_FIRST, ZH_PHONE_LAST = 3, 100
MERGED_ZH_BASE = 200  # merged = (phone - 3) * 6 + 200 + tone_number, tone_number 1..6
MERGED_ZH_FIRST, MERGED_ZH_LAST = 201, 788
# Phones that are not merged: English (E0..), sil, punctuation.
OTHER_PHONE_FIRST, OTHER_PHONE_LAST = 101, 173

# Tone ids: tone number k (1..6) of a Chinese syllable is tone symbol str(k); English phones get id 3 ('0').
ZH_TONE_IDS = (4, 11, 12, 13, 14, 15)  # tone numbers 1..6
EN_TONE_ID = 3

# Phone ids upstream's duration post-processing names (dur_pred in tts/frontend_function.py).
SIL_ID = 145  # 'sil'
LONG_PAUSE_IDS = (148, 153, 166, 145)  # '。', '！', '？', 'sil': at least 64 frames
SHORT_PAUSE_IDS = (163, 165)  # '，', '；': at least 32 frames

# Classifier-free-guidance mask tokens of the DiT (infer_cli: 302 - 1 and 32 - 1).
CFG_MASK_PHONE = 301
CFG_MASK_TONE = 31

# Aligner decoder tokens: begin/end of the phone/timestamp sequence, timestamp offset.
ALIGN_BOS = 798
ALIGN_EOS = 799
TIMESTAMP_OFFSET = 800

# G2P tokens, relative to the id of ``<Reserved_TTS_0>`` in the G2P tokenizer: the prompt ends with
# the start token ('sil'); generation stops at 801.
G2P_START_OFFSET = 145
G2P_STOP_OFFSET = 801


def legal_phone_tokens() -> list[int]:
    """Every merged token a phone position may hold (G2P output, aligner phone slots)."""
    return list(range(OTHER_PHONE_FIRST, OTHER_PHONE_LAST + 1)) + list(range(MERGED_ZH_FIRST, MERGED_ZH_LAST + 1))


def g2p_allowed_token_ids(reserved_tts_0: int) -> list[int]:
    """Token ids the G2P LLM may emit: the legal phone tokens and the stop token, offset by ``<Reserved_TTS_0>``."""
    return [reserved_tts_0 + t for t in legal_phone_tokens()] + [reserved_tts_0 + G2P_STOP_OFFSET]


def _split_one(token: int) -> tuple[int, int]:
    if MERGED_ZH_FIRST <= token <= MERGED_ZH_LAST:
        phone = (token - MERGED_ZH_BASE - 1) // 6 + ZH_PHONE_FIRST
        tone = ZH_TONE_IDS[(token - MERGED_ZH_BASE - 1) % 6]
        return phone, tone
    return token, EN_TONE_ID


def _ints(tokens: Iterable[int] | torch.Tensor) -> list[int]:
    if isinstance(tokens, torch.Tensor):
        return [int(t) for t in tokens.reshape(-1).tolist()]
    return [int(t) for t in tokens]


def split_ph(tokens: Iterable[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged tokens -> (phone ids, tone ids), two LongTensors [N] (upstream ``split_ph``)."""
    pairs = [_split_one(t) for t in _ints(tokens)]
    return torch.tensor([p for p, _ in pairs], dtype=torch.long), torch.tensor([t for _, t in pairs], dtype=torch.long)


def split_ph_timestamp(
    tokens: Iterable[int] | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Aligner output (phone, timestamp, phone, timestamp, ... without BOS/EOS) -> (ph, tone, dur, last frame).

    Durations are the differences of consecutive end frames (the first counts from frame 0), as
    upstream's ``split_ph_timestamp``; the input is not modified.
    """
    values = _ints(tokens)
    if len(values) % 2:
        raise ValueError(f"an alignment alternates phones and timestamps; got an odd length {len(values)}")
    phones, tones, durs = [], [], []
    previous = 0
    for i in range(0, len(values), 2):
        phone, tone = _split_one(values[i])
        end = values[i + 1] - TIMESTAMP_OFFSET if values[i + 1] >= TIMESTAMP_OFFSET else values[i + 1]
        phones.append(phone)
        tones.append(tone)
        durs.append(end - previous)
        previous = end
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return as_long(phones), as_long(tones), as_long(durs), previous


def merge_ph_tone(phones: Iterable[int] | torch.Tensor, tones: Iterable[int] | torch.Tensor) -> list[int]:
    """(phone ids, tone ids) -> merged tokens, the inverse of ``split_ph`` (upstream ``map_phone_to_tokendict``)."""
    merged = []
    for phone, tone in zip(_ints(phones), _ints(tones), strict=True):
        if ZH_PHONE_FIRST <= phone <= ZH_PHONE_LAST:
            if tone not in ZH_TONE_IDS:
                raise ValueError(f"Chinese phone id {phone} needs a tone id in {ZH_TONE_IDS}, got {tone}")
            merged.append((phone - ZH_PHONE_FIRST) * 6 + MERGED_ZH_BASE + ZH_TONE_IDS.index(tone) + 1)
        else:
            merged.append(phone)
    return merged
