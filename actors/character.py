"""Character agent: turns a user turn into a streamed reply in the character's voice.

Publishes each text delta, each complete sentence (for speech), the emotion, and a final
reply. An interrupt cancels the stream mid-way (the runtime cancels this handler); what
was already said is still reported, marked interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from actors.actor import Actor
from actors.llm import ChatModel, LLMError, OpenAIChat, close_stream, coalesce
from brain.emotion import TagReader, classify
from brain.prompt import Turn, build_messages
from brain.sentences import SentenceSplitter
from bus import Envelope
from bus.chat import ChatError, Delta, Emotion, Generate, Reply, Sentence, Status
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
        sentences = SentenceSplitter(first_words=first)
        said: list[str] = []
        emotion_sent = False
        n_delta = n_sentence = 0

        async def emit(text: str) -> None:
            nonlocal n_delta, n_sentence, emotion_sent
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
            for sentence in sentences.feed(text):
                await self.bus.publish(Sentence(sentence, n_sentence), cause=env)
                n_sentence += 1

        try:
            stream = self.model.stream(
                messages, model=card.llm.model, temperature=card.llm.temperature, max_tokens=card.llm.max_tokens
            )
            async with contextlib.aclosing(coalesce(shown(stream, tags))) as deltas:
                async for delta in deltas:
                    await emit(delta)
            for sentence in sentences.flush():
                await self.bus.publish(Sentence(sentence, n_sentence), cause=env)
                n_sentence += 1
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
