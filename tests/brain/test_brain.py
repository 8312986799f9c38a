"""brain/: pure decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain.emotion import TagReader, classify
from brain.prompt import Turn, build_messages, estimate_tokens, split_history, summarize
from brain.routing import CHARACTER, TASK, route
from brain.sentences import SentenceSplitter, halve
from config.characters import load_cards, parse_card
from config.settings import ConfigError


def test_history_is_cut_to_the_budget_newest_first() -> None:
    history = [Turn("user" if i % 2 == 0 else "assistant", f"message number {i} " * 10) for i in range(40)]
    older, recent = split_history(history, budget=300)
    assert older + recent == history
    assert recent and recent[-1] == history[-1]
    assert sum(estimate_tokens(t.text) + 4 for t in recent) <= 300


def test_prompt_has_persona_emotions_summary_history_and_the_new_text() -> None:
    history = [Turn("user", f"Question {i}. More words here.") for i in range(100)]
    messages = build_messages("You are Ada.", ["happy", "sad"], history, "latest?", budget=200)
    system = messages[0]["content"]
    assert messages[0]["role"] == "system" and system.startswith("You are Ada.")
    assert "happy, sad" in system and "Earlier in this conversation" in system
    assert "User: Question" in system and len(system) < 1000  # summarized, bounded
    assert messages[-1] == {"role": "user", "content": "latest?"}
    assert all(m["role"] in ("user", "assistant") for m in messages[1:])


def test_a_prompt_without_emotion_tags_is_the_persona_and_the_conversation() -> None:
    history = [Turn("user", "Hi."), Turn("assistant", "Hello!")]
    messages = build_messages("You are Ada.", ["happy", "sad"], history, "latest?", emotion_tags=False)
    assert messages[0] == {"role": "system", "content": "You are Ada."}
    assert [m["content"] for m in messages[1:]] == ["Hi.", "Hello!", "latest?"]
    tagged = build_messages("You are Ada.", ["happy", "sad"], history, "latest?")
    assert tagged[0]["content"].startswith("You are Ada.\n\n") and "[happy]" in tagged[0]["content"]
    assert tagged[1:] == messages[1:]


def test_summary_is_bounded() -> None:
    assert len(summarize([Turn("user", "x" * 200)] * 100, limit_chars=300)) <= 301


@pytest.mark.parametrize(
    ("deltas", "shown", "emotion"),
    [
        (["[hap", "py] Hi", " there"], "Hi there", "happy"),
        (["  [sad]", "Oh no."], "Oh no.", "sad"),
        (["Hello ", "[happy] no"], "Hello [happy] no", None),  # only a leading tag counts
        (["[unknownmood] Hm"], "Hm", None),  # not one of the card's emotions
        (["[not a tag at all, just text"], "[not a tag at all, just text", None),
        (["["], "[", None),
    ],
)
def test_emotion_tag_is_read_and_stripped_while_streaming(deltas: list[str], shown: str, emotion: str | None) -> None:
    reader = TagReader(["happy", "sad"])
    text = "".join(reader.feed(d) for d in deltas) + reader.flush()
    assert text == shown and reader.emotion == emotion


def test_classifier_picks_the_card_emotion_with_most_cues() -> None:
    assert classify("I'm so sorry, unfortunately that is sad.", ["happy", "sad", "neutral"]) == "sad"
    assert classify("Wonderful! I love it!", ["happy", "sad", "neutral"]) == "happy"
    assert classify("The sky is blue", ["happy", "sad", "neutral"]) == "neutral"


def test_sentences_come_out_as_soon_as_they_end() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello Dr. Smith. It costs 3") == ["Hello Dr. Smith."]
    assert s.feed(".5 dollars! Really") == ["It costs 3.5 dollars!"]
    assert s.feed("? Yes") == ["Really?"]
    assert s.flush() == ["Yes"]
    assert s.flush() == []


def test_the_first_clause_comes_out_alone_for_a_fast_start() -> None:
    s = SentenceSplitter()
    assert s.feed("Well, ") == []  # one word is not worth saying alone
    assert s.feed("hello there, my friend") == ["Well, hello there,"]
    assert s.feed(", again. Yes, sure. ") == ["my friend, again.", "Yes, sure."]  # only the first
    runon = SentenceSplitter()
    assert runon.feed("The capital of") == []  # the third word may still grow ("often")
    assert runon.feed(" France") == ["The capital of"]
    assert runon.feed(" is Paris and it is lovely. ") == ["France is Paris and it is lovely."]
    plain = SentenceSplitter(fast_start=False)
    assert plain.feed("Well, hello there, my friend. ") == ["Well, hello there, my friend."]


def test_a_long_sentence_is_spoken_in_pieces_as_it_streams() -> None:
    text = ("France is a land of vibrant colors and rich history, but it is also a place where people love "
            "to eat good food and drink fine wine together. Short one. ")  # fmt: skip
    streamed = SentenceSplitter(fast_start=False)
    pieces: list[str] = []
    seen_before_the_end: list[str] = []
    for i in range(0, len(text), 3):
        pieces += streamed.feed(text[i : i + 3])
        if "together" not in text[: i + 3]:
            seen_before_the_end = list(pieces)
    pieces += streamed.flush()
    assert pieces == [
        "France is a land of vibrant colors and rich history,",  # cut at its last comma within 12 words
        "but it is also a place where people love to eat good",  # no comma: cut at 12 words
        "food and drink fine wine together.",
        "Short one.",
    ]
    assert len(seen_before_the_end) == 2  # the first two were out before the sentence ended
    assert " ".join(pieces) == " ".join(text.split())  # nothing lost, nothing doubled
    whole = SentenceSplitter(fast_start=False)
    assert whole.feed(text) + whole.flush() == pieces  # the same pieces when it arrives at once
    stub = SentenceSplitter(fast_start=False)  # 13 words: 12 + 1 would leave a stub, so halved
    assert stub.feed("one two three four five six seven eight nine ten eleven twelve thirteen. ") == [
        "one two three four five six seven", "eight nine ten eleven twelve thirteen."]  # fmt: skip
    uncapped = SentenceSplitter(fast_start=False, max_words=None)
    assert uncapped.feed(text) == [" ".join(text.split()[:-2]), "Short one."]


def test_the_words_of_the_sentence_still_being_written_are_those_complete() -> None:
    s = SentenceSplitter(first_words=3)
    assert s.feed("Well") == [] and s.running() == ""  # the word may still grow
    assert s.feed(" it is about") == ["Well it is"] and s.running() == ""  # "about" may still grow
    assert s.feed(" 238,000,") == [] and s.running() == "about"
    assert s.feed("000 miles") == [] and s.running() == "about 238,000,000"
    assert s.feed(" away. And") == ["about 238,000,000 miles away."] and s.running() == ""
    assert s.feed(" then ") == [] and s.running() == "And then"  # a space ends the word
    assert s.flush() == ["And then"] and s.running() == ""


def test_a_piece_is_halved_at_the_clause_mark_nearest_its_middle_else_at_its_middle_word() -> None:
    assert halve("That is because of Rayleigh scattering, which makes blue light scatter more.") == (
        "That is because of Rayleigh scattering,", "which makes blue light scatter more.")  # fmt: skip
    assert halve("one two three four five six seven") == ("one two three", "four five six seven")
    assert halve("a b c, d e f g, h i j k l m n") == ("a b c, d e f g,", "h i j k l m n")  # the nearer mark
    assert halve("one two, three four five six") == ("one two, three", "four five six")  # no piece under 3 words
    assert halve("only five words here now") is None


def test_routing_is_a_real_decision() -> None:
    assert route("Hello, how are you?", tasks_available=True).agent == CHARACTER
    assert route("What was revenue last month?", tasks_available=True).agent == TASK
    assert route("What was revenue last month?", tasks_available=False).agent == CHARACTER
    assert route("   ", tasks_available=True).agent == CHARACTER


def test_shipped_cards_load() -> None:
    cards = load_cards()
    assert len(cards) >= 3
    for card in cards.values():
        assert card.persona and card.greeting and card.voice and card.emotions


def test_bad_card_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text('name = "Bad Name"\npersona = "p"\n')
    with pytest.raises(ConfigError, match=r"x\.toml: name must be lowercase"):
        parse_card(bad)
    bad.write_text('name = "ok"\n')
    with pytest.raises(ConfigError, match=r"x\.toml: missing 'persona'"):
        parse_card(bad)
