"""The `chaos` shape (placeholder while it is written)."""

from __future__ import annotations

import argparse

import aiohttp


async def run(args: argparse.Namespace, session: aiohttp.ClientSession, target: str) -> dict:
    raise NotImplementedError
