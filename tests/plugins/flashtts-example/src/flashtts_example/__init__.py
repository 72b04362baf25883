"""An example third-party FlashTTS plugin, as a plugin author would write it."""
