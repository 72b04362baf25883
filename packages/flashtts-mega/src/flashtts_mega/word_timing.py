"""Word timings of a MegaTTS3 segment from its phone durations.

The DiT is told how many 10 ms frames every phone lasts (``mel2ph``), and the audio it makes has
exactly those frames, so the time of every phone in a segment's audio is known. What MegaTTS3's G2P
does not say is which phones belong to which word: it reads the whole segment and writes one phone
sequence, with no word boundaries. The mapping is therefore made here, by one rule:

- the segment's words are its text's units (``flashtts_core.text.text_units``: runs of non-space
  characters with their punctuation, each CJK character alone), of the normalised text the G2P read;
- each word is also run through the G2P on its own, which says how many phones it has; the segment's
  phones (after the G2P's leading ``sil``) are handed out to the words in order, that many each;
- when those counts add up to the segment's phone count (a trained G2P says the same phones for a
  word alone as in its sentence, but for context-dependent words) the mapping is exact and the words'
  times are the phones' times (``exact``); when they do not, the word boundaries go to the phone
  boundaries nearest to where the counts put them, in proportion (not ``exact``).

A word starts where its first phone starts and ends where its last phone ends; the leading ``sil``
belongs to no word, the last phone (which carries the segment's closing pause) to the last word, so
the last word ends with the segment's audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WordFrames:
    """One word's span in its segment, in 10 ms frames from the segment's first frame."""

    word: str
    start: int
    end: int
    exact: bool


def phone_durations(mel2ph: torch.Tensor, count: int) -> list[int]:
    """Frames of each of ``count`` phones (1-based ``mel2ph`` [1, T] → durations of phones 1..count)."""
    values = mel2ph.reshape(-1).long()
    return [int(d) for d in torch.bincount(values, minlength=count + 1)[1 : count + 1].tolist()]


def word_frames(words: list[str], counts: list[int], durations: list[int]) -> list[WordFrames]:
    """Spans of ``words`` given each word's own phone count and the segment's phone durations
    (``durations[0]``: the leading ``sil``). See the module's docstring for the rule."""
    if not words:
        return []
    phones = len(durations) - 1  # the words' phones: all but the leading sil
    ends = [0]
    for duration in durations:
        ends.append(ends[-1] + duration)  # ends[k]: the frame where phone k (0-based) ends → ends[k + 1]
    total = sum(max(c, 0) for c in counts)
    exact = total == phones and phones > 0
    # bounds[k]: how many of the words' phones words 0..k-1 hold
    bounds = [0]
    at = 0
    for count in counts:
        at += max(count, 0)
        if exact:
            bounds.append(at)
        elif total:
            bounds.append(round(phones * at / total))
        else:  # no word has a phone of its own: equal shares
            bounds.append(round(phones * len(bounds) / len(words)))
    bounds[-1] = phones
    out = []
    for k, word in enumerate(words):
        first, last = bounds[k], bounds[k + 1]  # the word's phones are 1 + first .. last (1-based after sil)
        start = ends[1 + first]
        end = ends[1 + last] if last > first else start
        out.append(WordFrames(word, start, end, exact))
    return out
