"""Realtime sessions: text in pieces, audio out as decoded, cancel at once (session.py), behind the
WebSocket shapes that stock voice-agent plugins speak (cartesia.py: Cartesia's ``/tts/websocket``)."""
