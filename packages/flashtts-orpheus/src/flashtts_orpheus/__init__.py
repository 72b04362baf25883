"""Orpheus TTS engine for FlashTTS: a Llama LLM that speaks SNAC codes, decoded by the `snac` package."""

__version__ = "0.1.0"
