"""The built-in config behind ``--default-config``: dummy models only, so it serves with no network."""

__all__ = ["DEFAULT_CONFIG", "DEFAULT_SOURCE"]

DEFAULT_SOURCE = "<default config>"

DEFAULT_CONFIG = """
[gateway]
bind_address = "0.0.0.0:3000"

[models."dummy"]
routing = ["dummy"]
[models."dummy".providers.dummy]
type = "dummy"
model_name = "text"

[models."echo"]
routing = ["dummy"]
[models."echo".providers.dummy]
type = "dummy"
model_name = "echo"

[models."dummy-fallback"]
routing = ["broken", "dummy"]
[models."dummy-fallback".providers.broken]
type = "dummy"
model_name = "error"
[models."dummy-fallback".providers.dummy]
type = "dummy"
model_name = "text"
"""
