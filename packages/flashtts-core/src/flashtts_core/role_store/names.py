"""Role names: what a saved voice may be called, safe as a folder name and as an object key."""

from __future__ import annotations

import re
import unicodedata

from ..errors import InvalidRequest

MAX_NAME_LENGTH = 64
# Most filesystems cap one path component at 255 bytes: 64 four-byte characters would pass the
# length check and then fail in the filesystem.
MAX_NAME_BYTES = 255
_NAME = re.compile(r"^[^\W][\w\-. ]*$", re.UNICODE)
# Device names Windows refuses as file names, with or without an extension ("con", "nul.txt").
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def validate_role_name(name: str) -> str:
    """A role name: letters, digits, ``_ - . space``; no separators, no leading dot, ≤ 64 chars.

    Names are compared in Unicode NFC, so "Å" typed as one code point or as A + ring is one role."""
    if not isinstance(name, str):
        raise InvalidRequest("role name must be a string", param="name")
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise InvalidRequest("role name must not be empty", param="name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"role name is longer than {MAX_NAME_LENGTH} characters", param="name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidRequest(f"role name is longer than {MAX_NAME_BYTES} bytes in UTF-8", param="name")
    # Combining marks (Devanagari and Thai vowel signs, Arabic harakat …) are part of the letter before them.
    letters = "".join(ch for ch in name if not unicodedata.category(ch).startswith("M"))
    if ".." in name or not letters.startswith(name[0]) or not _NAME.match(letters) or name.endswith((".", " ")):
        raise InvalidRequest(
            f"invalid role name {name!r}: use letters, digits, '_', '-', '.', spaces; no path characters",
            param="name",
        )
    if _RESERVED.match(name):
        raise InvalidRequest(f"invalid role name {name!r}: it is a reserved device name on Windows", param="name")
    return name
