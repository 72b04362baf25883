"""Built-in voices of the Orpheus releases, per language (``--lang``).

English: canopyai/Orpheus-TTS README, in its order of conversational realism. The multilingual
research release (canopylabs.ai/releases/orpheus_can_speak_any_language) has one model per language
(Spanish and Italian share one), each fine-tuned on its own voices; the names are the prompt prefixes.
"""

from __future__ import annotations

from typing import Optional

from flashtts_core.errors import InvalidRequest

VOICES: dict[str, tuple[str, ...]] = {
    "english": ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"),
    "french": ("pierre", "amelie", "marie"),
    "german": ("jana", "thomas", "max"),
    "korean": ("유나", "준서"),
    "hindi": ("ऋतिका",),
    "mandarin": ("长乐", "白芷"),
    "spanish": ("javi", "sergio", "maria"),
    "italian": ("pietro", "giulia", "carlo"),
}
# The es_it release speaks both languages with both voice sets.
VOICES["spanish_italian"] = VOICES["spanish"] + VOICES["italian"]

# Emotion tags the releases were trained on; they are plain text in the prompt, passed through as is.
EMOTION_TAGS: dict[str, tuple[str, ...]] = {
    "english": ("<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>"),
}

ALIASES = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "ko": "korean",
    "hi": "hindi",
    "zh": "mandarin",
    "chinese": "mandarin",
    "es": "spanish",
    "it": "italian",
    "es_it": "spanish_italian",
}

# ISO 639-1 codes of each release's languages (Engine.languages).
LANGUAGE_CODES: dict[str, tuple[str, ...]] = {
    "english": ("en",), "french": ("fr",), "german": ("de",), "korean": ("ko",), "hindi": ("hi",),
    "mandarin": ("zh",), "spanish": ("es",), "italian": ("it",), "spanish_italian": ("es", "it"),
}  # fmt: skip


def resolve_lang(lang: Optional[str]) -> str:
    """A ``--lang`` value (a name or an ISO code; English when unset) as a key of :data:`VOICES`."""
    if lang is None or not str(lang).strip():
        return "english"
    key = str(lang).strip().lower()
    key = ALIASES.get(key, key)
    if key not in VOICES:
        choices = ", ".join(sorted(VOICES))
        raise InvalidRequest(f"unknown Orpheus language {lang!r}; choose one of: {choices}", param="lang")
    return key
