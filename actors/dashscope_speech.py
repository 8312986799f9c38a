"""Cloud speech through Alibaba's ``dashscope`` SDK: CosyVoice streaming TTS and Paraformer
real-time ASR, behind the same interfaces as the local engines (``Synthesizer``,
``Recognizer``).

The SDK's audio APIs are synchronous and run their own threads; the TTS and STT workers
call these from a worker thread (``run_in_executor``), so the event loop never blocks.
Every failure (no key, a key the service rejects, ``task-failed``, a timeout, a dropped
connection) becomes a :class:`SpeechError` with a message meant for the user.
"""

from __future__ import annotations

import threading

import numpy as np

from actors.speech import Float32, Int16, SpeechError, float_to_pcm16

COSYVOICE_RATE = 24_000
ASR_RATE = 16_000


def _configure(api_key: str, ws_url: str | None) -> None:
    """The SDK reads its key and endpoint from module attributes (one key per process)."""
    if not api_key:
        raise SpeechError("DashScope speech needs DASHSCOPE_API_KEY")
    import dashscope

    dashscope.api_key = api_key
    if ws_url:
        dashscope.base_websocket_api_url = ws_url  # DASHSCOPE_WEBSOCKET_BASE_URL, for a local endpoint


class CosyVoiceSynthesizer:
    """``cosyvoice-v2:longxiaochun`` -> model ``cosyvoice-v2``, voice ``longxiaochun``; 24 kHz PCM16."""

    rate = COSYVOICE_RATE

    def __init__(self, voice_id: str, api_key: str, ws_url: str | None = None, timeout: float = 15.0) -> None:
        model, _, voice = voice_id.partition(":")
        if not voice:
            raise SpeechError(f"CosyVoice voice {voice_id!r} must be MODEL:VOICE, e.g. cosyvoice-v2:longxiaochun")
        self.model, self.voice, self.url, self.timeout, self._key = model, voice, ws_url, timeout, api_key

    def synthesize(self, text: str) -> Int16:
        from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer

        _configure(self._key, self.url)
        synth = SpeechSynthesizer(
            model=self.model, voice=self.voice, format=AudioFormat.PCM_24000HZ_MONO_16BIT, url=self.url
        )
        try:
            audio = synth.call(text, timeout_millis=int(self.timeout * 1000))
        except Exception as exc:
            raise SpeechError(f"CosyVoice could not speak: {_reason(exc)}") from None
        finally:
            synth.close()  # type: ignore[no-untyped-call]
        if not audio:
            raise SpeechError("CosyVoice returned no audio")
        return np.frombuffer(audio, dtype="<i2")


class ParaformerRecognizer:
    """Paraformer real-time ASR (``paraformer-realtime-v2``), one recognition task per utterance."""

    FRAME = 3200  # 100 ms of 16 kHz PCM16

    def __init__(self, model: str, api_key: str, ws_url: str | None = None, timeout: float = 15.0) -> None:
        self.model, self.timeout, self._key, self._url = model, timeout, api_key, ws_url

    def transcribe(self, samples: Float32) -> str:
        from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult

        _configure(self._key, self._url)
        texts: list[str] = []
        errors: list[str] = []
        done = threading.Event()

        class Collect(RecognitionCallback):
            def on_event(self, result: RecognitionResult) -> None:
                sentence = result.get_sentence()
                if isinstance(sentence, dict) and RecognitionResult.is_sentence_end(sentence):
                    texts.append(str(sentence.get("text", "")))

            def on_error(self, result: RecognitionResult) -> None:
                errors.append(str(getattr(result, "message", result)))
                done.set()

            def on_complete(self) -> None:
                done.set()

        recognition = Recognition(model=self.model, callback=Collect(), format="pcm", sample_rate=ASR_RATE)
        try:
            recognition.start()
            pcm = float_to_pcm16(samples).tobytes()
            for offset in range(0, len(pcm), self.FRAME):
                recognition.send_audio_frame(pcm[offset : offset + self.FRAME])
            recognition.stop()  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise SpeechError(f"Paraformer could not listen: {errors[0] if errors else _reason(exc)}") from None
        if not done.wait(self.timeout):
            raise SpeechError("Paraformer did not answer in time")
        if errors:
            raise SpeechError(f"Paraformer could not listen: {errors[0]}")
        return " ".join(t for t in texts if t).strip()


def _reason(exc: BaseException) -> str:
    """The service's own words where the SDK kept them (error_code: error_message)."""
    name, message = getattr(exc, "name", None), getattr(exc, "message", None)
    if name or message:
        return f"{name}: {message}" if name else str(message)
    return f"{type(exc).__name__}: {exc}"
