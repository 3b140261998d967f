"""Configuration: TOML loading with tomlkit, validation into frozen dataclasses."""

from gateway.config.loader import ConfigError, load_config, load_config_text
from gateway.config.schema import (
    CAPABILITIES,
    Config,
    GatewaySettings,
    ModelConfig,
    ProviderConfig,
    RetryConfig,
    TimeoutsConfig,
)

__all__ = [
    "CAPABILITIES",
    "Config",
    "ConfigError",
    "GatewaySettings",
    "ModelConfig",
    "ProviderConfig",
    "RetryConfig",
    "TimeoutsConfig",
    "load_config",
    "load_config_text",
]
