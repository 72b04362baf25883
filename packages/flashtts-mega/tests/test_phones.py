"""MegaTTS3's phone/tone inventory and its token spaces (upstream ph_tone_convert.py, dict.json)."""

import json
from pathlib import Path

import pytest
import torch
from flashtts_mega import phones


def test_inventory_matches_upstreams_ids():
    symbols = phones.phone_symbols()
    assert len(symbols) == phones.PHONE_DICT_SIZE == 174
    assert len(phones.tone_symbols()) == phones.TONE_DICT_SIZE == 19
    assert symbols[:3] == ["<pad>", "<EOS>", "<UNK>"]
    # the ids upstream hard-codes, checked against the symbols they stand for
    assert symbols[phones.SIL_ID] == "sil"
    assert [symbols[i] for i in phones.LONG_PAUSE_IDS] == ["。", "！", "？", "sil"]
    assert [symbols[i] for i in phones.SHORT_PAUSE_IDS] == ["，", "；"]
    assert symbols[phones.ZH_PHONE_FIRST] == "C0a" and symbols[phones.ZH_PHONE_LAST] == "C0＿"
    assert symbols[phones.OTHER_PHONE_FIRST] == "E0aa" and symbols[phones.OTHER_PHONE_LAST] == "～"
    assert all(s.startswith("C0") for s in symbols[3:101])
    tones = phones.tone_symbols()
    assert [tones[i] for i in phones.ZH_TONE_IDS] == ["1", "2", "3", "4", "5", "6"]
    assert tones[phones.EN_TONE_ID] == "0"
    assert phones.phone_id("sil") == 145 and phones.phone_id("no-such-phone") == phones.UNK_ID


def test_data_file_names_its_origin():
    data = json.loads((Path(phones.__file__).with_name("phones.json")).read_text(encoding="utf-8"))
    assert "bytedance/MegaTTS3" in data["origin"] and "Apache-2.0" in data["origin"]


def test_split_ph_maps_merged_chinese_tokens_back():
    ph, tone = phones.split_ph(torch.tensor([201, 206, 788, 145, 120]))
    assert ph.tolist() == [3, 3, 100, 145, 120]
    assert tone.tolist() == [4, 15, 15, 3, 3]
    assert ph.dtype == tone.dtype == torch.long


def test_merge_inverts_split_for_every_legal_token():
    tokens = phones.legal_phone_tokens()
    assert len(tokens) == 73 + 588
    assert phones.merge_ph_tone(*phones.split_ph(tokens)) == tokens
    with pytest.raises(ValueError, match="tone"):
        phones.merge_ph_tone([3], [3])


def test_split_ph_timestamp_durations_and_input_untouched():
    tokens = torch.tensor([201, 805, 145, 812, 130, 830])
    before = tokens.clone()
    ph, tone, dur, last = phones.split_ph_timestamp(tokens)
    assert torch.equal(tokens, before)
    assert ph.tolist() == [3, 145, 130] and tone.tolist() == [4, 3, 3]
    assert dur.tolist() == [5, 7, 18] and last == 30
    with pytest.raises(ValueError, match="odd"):
        phones.split_ph_timestamp([201, 805, 145])


def test_g2p_allowed_ids_are_phones_and_stop_offset_by_reserved_tts_0():
    reserved = 151000
    allowed = phones.g2p_allowed_token_ids(reserved)
    assert reserved + phones.G2P_STOP_OFFSET in allowed
    assert reserved + phones.G2P_START_OFFSET in allowed  # 'sil' is also a phone
    assert min(allowed) == reserved + 101 and max(allowed) == reserved + 801
    assert reserved + 174 not in allowed and reserved + 789 not in allowed
    assert (phones.CFG_MASK_PHONE, phones.CFG_MASK_TONE) == (301, 31)
    assert (phones.ALIGN_BOS, phones.ALIGN_EOS, phones.TIMESTAMP_OFFSET) == (798, 799, 800)
