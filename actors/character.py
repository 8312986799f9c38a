"""Character agent: turns a user turn into a streamed reply in the character's voice.

Publishes each text delta, each complete sentence (for speech), the emotion, and a final
reply; for a spoken reply also the words of the sentence still being written, as each is
complete (a TTS worker says them early when the model is slow to end the sentence). An
interrupt cancels the stream mid-way (the runtime cancels this handler); what was already
said is still reported, marked interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from actors.actor import Actor, ActorBus
from actors.llm import ChatModel, LLMError, OpenAIChat, close_stream, coalesce
from brain.emotion import TagReader, classify
from brain.prompt import Turn, build_messages
from brain.sentences import SentenceSplitter
from bus import Envelope
from bus.chat import ChatError, Delta, Emotion, Generate, Reply, Sentence, Status, Words
from config.characters import Card, load_cards
from config.process import give_way
from config.settings import settings

HISTORY_BUDGET_TOKENS = 1200


class CharacterAgent(Actor):
    name = "character"
    queues = ("character",)
    prefer_local = True  # its work waits on the model server; next to the orchestrator it skips a hop
    model: ChatModel

    async def on_start(self) -> None:
        cfg = settings()
        base_url = cfg.llm_base_url or f"http://127.0.0.1:{cfg.llm_port}/v1"
        self.model = OpenAIChat(base_url, cfg.llm_api_key, cfg.llm_model, cfg.llm_timeout)
        self.cards = load_cards()
        self.emotion_tags = cfg.asks_emotion_tags
        self.writing = 0
        """Replies being written now: with others, a reply's first spoken piece is longer."""

    async def on_stop(self) -> None:
        if isinstance(self.model, OpenAIChat):
            await self.model.close()

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if not isinstance(body, Generate):
            return
        card = self.cards.get(body.character)
        if card is None:
            await self.bus.publish(ChatError("unknown_character", f"no character {body.character!r}"), cause=env)
            await self.bus.publish(Reply("", error="unknown_character"), cause=env)
            return
        shared = self.writing > 0
        self.writing += 1
        try:
            await self._speak(env, card, body, shared=shared)
        finally:
            self.writing -= 1

    async def _speak(self, env: Envelope[Any], card: Card, body: Generate, *, shared: bool) -> None:
        history = [Turn(h.get("speaker", "user"), str(h.get("text", ""))) for h in body.history]
        messages = build_messages(
            card.persona, card.emotions, history, body.text, budget=HISTORY_BUDGET_TOKENS, extra_context=body.context,
            emotion_tags=self.emotion_tags,
        )  # fmt: skip
        provider = ""
        if isinstance(self.model, OpenAIChat):
            provider = f"{card.llm.model or self.model.model}@{self.model.host}"
        tags = TagReader(card.emotions)
        first = SentenceSplitter.SHARED_FIRST_WORDS if shared else SentenceSplitter.FIRST_WORDS
        sentences = Sentences(self.bus, env, SentenceSplitter(first_words=first), speak=body.speak)
        said: list[str] = []
        emotion_sent = False
        n_delta = 0

        async def emit(text: str) -> None:
            nonlocal n_delta, emotion_sent
            if not text:
                return
            said.append(text)
            await self.bus.publish(Delta(text, n_delta), cause=env)  # the first words go out first
            if n_delta == 0:
                give_way()  # to the threads carrying them to the browser, before the rest is read
            if not emotion_sent and tags.emotion:
                emotion_sent = True
                await self.bus.publish(Emotion(tags.emotion), cause=env)
            if n_delta == 0:
                await self.bus.publish(Status("speaking", "Speaking…"), cause=env)
            n_delta += 1
            await sentences.feed(text)

        try:
            stream = self.model.stream(
                messages, model=card.llm.model, temperature=card.llm.temperature, max_tokens=card.llm.max_tokens
            )
            async with contextlib.aclosing(coalesce(shown(stream, tags))) as deltas:
                async for delta in deltas:
                    await emit(delta)
            await sentences.flush()
        except asyncio.CancelledError:
            await self.bus.publish(
                Reply("".join(said), tags.emotion or "", interrupted=True, provider=provider), cause=env
            )
            raise
        except LLMError as exc:
            self.log.warning("model failed", code=exc.code, error=exc.message)
            await self.bus.publish(ChatError(exc.code, exc.message), cause=env)
            await self.bus.publish(
                Reply("".join(said), tags.emotion or "", error=exc.code, provider=provider), cause=env
            )
            return
        text = "".join(said)
        emotion = tags.emotion or classify(text, card.emotions)
        if not emotion_sent:
            await self.bus.publish(Emotion(emotion), cause=env)
        await self.bus.publish(Reply(text, emotion, provider=provider), cause=env)


class Sentences:
    """A reply's sentences as they are written, for speech; for a spoken reply also the words
    of the sentence still being written (``Words``), again as each is complete, from the first
    sentence's end on (speech starts with that sentence)."""

    def __init__(self, bus: ActorBus, cause: Envelope[Any], splitter: SentenceSplitter, *, speak: bool) -> None:
        self._bus, self._cause, self._splitter, self._speak = bus, cause, splitter, speak
        self._sent = self._words = 0
        self._running = ""

    async def feed(self, text: str) -> None:
        for sentence in self._splitter.feed(text):
            await self._say(sentence)
        if self._speak and self._sent and (running := self._splitter.running()) != self._running:
            self._running = running
            if running:
                await self._bus.publish(Words(running, self._words), cause=self._cause)

    async def flush(self) -> None:
        for sentence in self._splitter.flush():
            await self._say(sentence)

    async def _say(self, sentence: str) -> None:
        await self._bus.publish(Sentence(sentence, self._sent), cause=self._cause)
        self._sent += 1
        self._words += len(sentence.split())


async def shown(pieces: AsyncIterator[str], tags: TagReader) -> AsyncIterator[str]:
    """The reply as the user sees it: a leading emotion tag taken off. Before coalescing, so
    the first piece coalescing hands over at once is the first visible words, not the tag
    (which used to cost the words behind it a turn of the event loop)."""
    try:
        async for piece in pieces:
            text = tags.feed(piece)
            if text:
                yield text
    finally:
        await close_stream(pieces)  # the provider's stream ends with us
    text = tags.flush()
    if text:
        yield text
