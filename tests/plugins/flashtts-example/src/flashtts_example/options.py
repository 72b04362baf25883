"""The tone engine's own options: one server flag and one request field, declared here and nowhere
else. FlashTTS turns them into ``--tone_gain`` / ``FLASHTTS_TONE_GAIN`` and a ``tone_octave`` field
of /speak, /clone_voice, /multi_speak and /v1/audio/speech."""

from __future__ import annotations

from flashtts_core.options import PluginOptions, option


class ToneOptions(PluginOptions):
    owner = "tone"  # the engine's name

    tone_gain: float = option(0.3, gt=0, le=1, help="Amplitude of the tone engine's sine (a server flag).")
    tone_octave: int = option(
        0, scope="request", ge=-2, le=2, title="Octave", help="Octaves above (or below) the voice's tone, per request."
    )
