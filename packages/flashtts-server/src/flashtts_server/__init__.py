"""FlashTTS server: settings, CLI, the HTTP API and the web page."""

__version__ = "0.1.0"
