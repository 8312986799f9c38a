"""Character cards: one TOML file per character in ``config/characters/``."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import ConfigError

CARDS_DIR = Path(__file__).resolve().parent / "characters"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class LLMSettings:
    model: str | None = None
    """Overrides GREENROOM_LLM_MODEL for this character."""
    temperature: float = 0.7
    max_tokens: int = 200


@dataclass(frozen=True, slots=True)
class Card:
    name: str
    """Id used in URLs: ``/ws/{name}``."""
    display_name: str
    persona: str
    """System prompt: who the character is."""
    greeting: str
    """First line of a new session."""
    voice: str
    """TTS voice id."""
    emotions: tuple[str, ...]
    """Emotions this character shows; the first is its default mood when none is detected."""
    llm: LLMSettings

    def public(self) -> dict[str, Any]:
        """What ``GET /api/characters`` shows."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "greeting": self.greeting,
            "voice": self.voice,
            "emotions": list(self.emotions),
        }


def load_cards(directory: Path = CARDS_DIR) -> dict[str, Card]:
    cards: dict[str, Card] = {}
    for path in sorted(directory.glob("*.toml")):
        card = parse_card(path)
        cards[card.name] = card
    if not cards:
        raise ConfigError(f"no character cards in {directory}")
    return cards


def parse_card(path: Path) -> Card:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
    try:
        name = doc["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{path.name}: name must be lowercase letters, digits, '-' or '_'")
        emotions = tuple(doc.get("emotions", ["neutral"]))
        llm = doc.get("llm", {})
        return Card(
            name=name,
            display_name=str(doc.get("display_name", name.title())),
            persona=str(doc["persona"]).strip(),
            greeting=str(doc.get("greeting", "")),
            voice=str(doc.get("voice", "")),
            emotions=emotions or ("neutral",),
            llm=LLMSettings(
                model=llm.get("model"),
                temperature=float(llm.get("temperature", 0.7)),
                max_tokens=int(llm.get("max_tokens", 200)),
            ),
        )
    except KeyError as exc:
        raise ConfigError(f"{path.name}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
