"""Saved voices ("roles"): /audio_roles, /add_speaker, /delete_speaker (also under /v1)."""
