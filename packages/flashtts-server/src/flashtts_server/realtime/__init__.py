"""Realtime sessions: text in pieces, audio out as decoded, cancel at once (session.py), behind the
WebSocket shapes that stock voice-agent plugins speak (socket.py holds what they share): cartesia.py,
Cartesia's ``/tts/websocket``; elevenlabs.py, ElevenLabs' ``/v1/text-to-speech/{voice_id}/multi-stream-input``."""
