"""budgateway: an OpenAI-compatible LLM API gateway on gevent and Falcon."""

__all__ = ["__version__"]

__version__ = "0.1.0"
