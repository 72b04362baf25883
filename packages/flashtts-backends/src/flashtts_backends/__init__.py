"""LLM backends for FlashTTS. Each module imports its engine library only when a backend is built."""

__version__ = "0.1.0"
