"""Unit tests for domain.limits and commands.limits: the defaults are the settings' defaults,
and the settings reach the limits."""

from __future__ import annotations

from dataclasses import fields

from commands.limits import limits_from
from domain.limits import DEFAULT_LIMITS, Limits
from infra.settings import Settings
from infra.signal_urls import SignalUrls


def test_defaults_equal_the_settings_defaults() -> None:
    assert limits_from(Settings()) == DEFAULT_LIMITS == Limits()


LIMIT_FIELDS = [f.name for f in fields(Limits) if f.name.startswith("max_")]


def test_each_setting_reaches_its_limit() -> None:
    values = {name: 1000 + i for i, name in enumerate(LIMIT_FIELDS)}
    limits = limits_from(Settings(**values))  # type: ignore[arg-type]
    assert {name: getattr(limits, name) for name in LIMIT_FIELDS} == values


def test_signal_urls_come_from_the_settings() -> None:
    settings = Settings(public_url="https://lf.example", signal_url_ttl_s=60)
    urls = limits_from(settings).signal_urls
    assert urls == SignalUrls(settings.secret_key, "https://lf.example", 60)
