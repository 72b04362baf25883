"""MegaTTS3 engine for FlashTTS."""

__version__ = "0.1.0"
