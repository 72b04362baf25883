"""Multi-speaker text: ``<role:NAME>`` and ``<role:NAME,pitch:LEVEL,speed:LEVEL>`` tags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .errors import InvalidRequest
from .request import Level

_TAG = re.compile(r"<role:([^<>]*)>", re.IGNORECASE)
# What is left of a tag that never closed ("<role:male hi") or holds another one ("<role:<role:a>>").
_STRAY = re.compile(r"<role:|<\s*/?\s*role\s*>", re.IGNORECASE)


@dataclass
class DialogueSegment:
    role: str
    text: str
    pitch: Optional[Level] = None
    speed: Optional[Level] = None


def parse_dialogue(text: str) -> list[DialogueSegment]:
    """Split tagged text into segments; text before the first tag or a malformed tag is a 400."""
    matches = list(_TAG.finditer(text))
    if not matches:
        raise InvalidRequest(
            "multi-speaker text needs <role:NAME> tags, e.g. '<role:female> Hello <role:male> Hi'", param="text"
        )
    lead = text[: matches[0].start()].strip()
    if lead:
        raise InvalidRequest(f"text before the first <role:...> tag: {lead[:40]!r}", param="text")
    segments: list[DialogueSegment] = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        role, pitch, speed = _parse_tag(match.group(1))
        if _STRAY.search(body):
            where = text[match.start() : end].strip()
            raise InvalidRequest(
                f"malformed or unclosed <role:...> tag in {where[:60]!r}; write tags as <role:NAME>", param="text"
            )
        if not body:
            raise InvalidRequest(f"<role:{role}> has no text", param="text")
        segments.append(DialogueSegment(role=role, text=body, pitch=pitch, speed=speed))
    return segments


def _parse_tag(spec: str) -> tuple[str, Optional[Level], Optional[Level]]:
    parts = [p.strip() for p in spec.split(",")]
    role = parts[0]
    if not role:
        raise InvalidRequest("a <role:...> tag has no name", param="text")
    values: dict[str, Optional[Level]] = {}
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("pitch", "speed"):
            raise InvalidRequest(f"bad option {part!r} in <role:{spec}>; use pitch:LEVEL or speed:LEVEL", param="text")
        values[key] = Level.parse(value.strip(), key)
    return role, values.get("pitch"), values.get("speed")
