"""Audit routes (placeholder, filled below)."""

from __future__ import annotations

from gateways.http.routing import Route

ROUTES: list[Route] = []
