"""Unit tests for domain.limits and commands.limits: the defaults are the settings' defaults,
and the settings reach the limits."""

from __future__ import annotations

from dataclasses import fields

from commands.limits import limits_from
from domain.limits import DEFAULT_LIMITS, Limits
from infra.settings import Settings


def test_defaults_equal_the_settings_defaults() -> None:
    assert limits_from(Settings()) == DEFAULT_LIMITS == Limits()


def test_each_setting_reaches_its_limit() -> None:
    values = {f.name: 1000 + i for i, f in enumerate(fields(Limits))}
    limits = limits_from(Settings(**values))  # type: ignore[arg-type]
    assert {f.name: getattr(limits, f.name) for f in fields(Limits)} == values
