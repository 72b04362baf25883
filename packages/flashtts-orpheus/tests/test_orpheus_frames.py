"""Prompt layout and the id → code mapping of 7-token frames onto SNAC's three codebooks."""

import numpy as np
import pytest
from flashtts_orpheus import frames
from flashtts_orpheus.frames import FrameParser, build_prompt, frames_to_codes


def audio_id(slot: int, code: int) -> int:
    return frames.AUDIO_BASE + slot * frames.CODEBOOK_SIZE + code


def frame_ids(codes) -> list[int]:
    return [audio_id(slot, code) for slot, code in enumerate(codes)]


def test_prompt_wraps_text_like_upstream():
    assert build_prompt([5, 6]) == [128259, 128000, 5, 6, 128009, 128260, 128261, 128257]


def test_audio_ids_cover_seven_codebooks_and_fit_the_released_vocabulary():
    allowed = frames.audio_token_ids()
    assert allowed[0] == 128266 and allowed[-1] == 128266 + 7 * 4096 - 1
    assert frames.END_OF_SPEECH not in allowed and allowed[-1] < frames.VOCAB_SIZE == 156940


def test_frame_maps_onto_codebooks_interleaved_per_frame():
    rows = np.array([[10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26]])
    coarse, middle, fine = frames_to_codes(rows)
    assert coarse.tolist() == [10, 20]
    assert middle.tolist() == [11, 14, 21, 24]
    assert fine.tolist() == [12, 13, 15, 16, 22, 23, 25, 26]


def test_code_zero_and_the_last_code_are_valid():
    parser = FrameParser()
    first = [0, 0, 0, 0, 0, 0, 0]
    last = [4095] * 7
    got = parser.feed(frame_ids(first) + frame_ids(last))
    assert [f.tolist() for f in got] == [first, last]
    assert parser.finish().malformed == 0


def test_frames_complete_across_deltas():
    parser = FrameParser()
    stream = frame_ids([1, 2, 3, 4, 5, 6, 7])
    assert parser.feed(stream[:3]) == []
    got = parser.feed(stream[3:])
    assert [f.tolist() for f in got] == [[1, 2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize(
    "bad",
    [
        [audio_id(5, 1)],  # an id of the wrong slot
        [12345],  # a text id
        [frames.END_OF_AI],  # another special id
        [audio_id(3, 0), audio_id(4, 0)],  # a run of wrong ids counts once
    ],
)
def test_malformed_frame_is_skipped_counted_and_the_next_frame_parses(bad):
    good = [7, 6, 5, 4, 3, 2, 1]
    stream = frame_ids(good) + frame_ids(good)[:3] + bad + frame_ids(good)[3:] + frame_ids(good)
    parser = FrameParser()
    got = parser.feed(stream)
    stats = parser.finish()
    assert [f.tolist() for f in got] == [good, good]
    assert stats.malformed == 1 and stats.frames == 2


def test_a_frame_cut_short_at_the_end_is_incomplete_not_malformed():
    parser = FrameParser()
    assert parser.feed(frame_ids([1] * 7) + frame_ids([2] * 7)[:4]) != []
    stats = parser.finish()
    assert (stats.frames, stats.malformed, stats.incomplete) == (1, 0, 1)


def test_a_new_slot_zero_abandons_a_partial_frame():
    parser = FrameParser()
    got = parser.feed(frame_ids([1] * 7)[:5] + frame_ids([2] * 7))
    assert [f.tolist() for f in got] == [[2] * 7]
    assert parser.finish().malformed == 1
