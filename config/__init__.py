"""Configuration: the one :class:`Settings` object, built once and passed in."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
