"""Response models of the role routes (server-api.md §4.5–4.7)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoleList(BaseModel):
    success: bool = True
    roles: list[str] = Field(description="Every name /speak accepts: saved roles and built-in voices.")
    saved: list[str] = Field(description="Saved roles in role_dir.")
    builtin: list[str] = Field(description="The engine's built-in voices.")


class RoleChanged(BaseModel):
    success: bool = True
    role: str
