"""Spark-TTS engine for FlashTTS: BiCodec, voice cloning, built-in voices with pitch and speed."""

__version__ = "0.1.0"
