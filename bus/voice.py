"""Voice messages: audio in from the edge, speech events and transcripts from the STT
worker, synthesized audio from the TTS worker, 48 kHz audio out from the resampler.

Audio travels as raw PCM16 little-endian mono bytes in the first extra frame, never
base64 and never inside the msgpack body.
"""

from __future__ import annotations

from bus.message import Message, message


@message("voice.audio_in")
class AudioIn(Message):
    """A chunk of the user's microphone (edge -> STT worker). PCM16 in ``extra[0]``."""

    seq: int
    """0, 1, 2… per session, so a gap is visible."""
    rate: int
    """Sample rate of the chunk, Hz."""


@message("voice.speech_start")
class SpeechStarted(Message):
    """The VAD heard the user start speaking (barge-in trigger)."""

    offset_ms: float = 0.0
    """Where in the session's audio stream speech began."""


@message("voice.speech_end")
class SpeechEnded(Message):
    """The VAD decided the user stopped speaking; the final transcript follows."""

    duration_ms: float
    """Length of the utterance."""


@message("voice.transcript")
class Transcript(Message):
    """What the user is saying (interim) or said (final)."""

    text: str
    """Recognized words."""
    final: bool
    """False for interim hypotheses while the user speaks."""


@message("voice.tts_audio")
class TtsAudio(Message):
    """Synthesized speech at the provider's rate (TTS worker -> resampler). PCM16 in ``extra[0]``."""

    seq: int
    """0, 1, 2… within the turn."""
    rate: int
    """Sample rate, Hz (22050 for Piper, 24000 for CosyVoice…)."""
    last: bool = False
    """The turn's speech is complete: flush the resampler."""


@message("voice.audio_out")
class AudioOut(Message):
    """Speech for the browser, 48 kHz (resampler -> edge). PCM16 in ``extra[0]``."""

    seq: int
    """0, 1, 2… within the turn."""
    last: bool = False
    """End of the turn's speech."""


@message("voice.heard")
class Heard(Message):
    """What the user actually heard of an interrupted spoken reply (TTS worker -> session manager)."""

    text: str
    """The words whose audio was played before the interruption."""
