"""Settings (environment variables over one TOML file), logging setup, character cards."""

from config.settings import ConfigError, Group, Settings, load_settings

__all__ = ["ConfigError", "Group", "Settings", "load_settings"]
