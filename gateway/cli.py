"""The ``budgateway`` command: find and check the config, then serve it with a master and its workers.

NOTE: the master is not monkey-patched (gunicorn's arbiter waits on real signals and children); each
worker patches itself after fork, before it builds the app.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping

from gateway import __version__
from gateway.config.default import DEFAULT_CONFIG, DEFAULT_SOURCE
from gateway.config.loader import ConfigError, auth_enabled, load_config, load_config_text, parse_bind
from gateway.config.schema import Config
from gateway.logs import configure_logging
from gateway.observe.setup import prepare as prepare_observers
from gateway.stores.crypto import KeyLoadError, load_decryptor
from providers.registry import RegistryError, build_registry

__all__ = ["main"]

log = logging.getLogger("gateway")

#: Exit code for a usage problem: no config found, bad arguments.
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="budgateway", description="An OpenAI-compatible LLM API gateway.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config-file", metavar="PATH", help="the TOML config (else $TENSORZERO_CONFIG_PATH, else ./tensorzero.toml)")
    src.add_argument("--default-config", action="store_true", help="serve the built-in config of dummy models")
    p.add_argument("--bind", metavar="HOST:PORT", help="overrides [gateway] bind_address")
    p.add_argument("--workers", type=int, metavar="N", help="overrides [gateway] workers; 0 = one per CPU")
    p.add_argument("--log-format", choices=("pretty", "json"), default="pretty")
    p.add_argument("--check-config", action="store_true", help="validate the config, print the result, exit 0 or 1")
    p.add_argument("--version", action="version", version=f"budgateway {__version__}")
    return p


def _find_config(args: argparse.Namespace) -> str | None:
    if args.config_file:
        return args.config_file
    env = os.environ.get("TENSORZERO_CONFIG_PATH")
    if env:
        return env
    if os.path.exists("tensorzero.toml"):
        return "tensorzero.toml"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_format)
    if args.workers is not None and args.workers < 0:
        print("budgateway: --workers must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    bind = None
    if args.bind:
        try:
            bind = parse_bind(args.bind)
        except ValueError as e:
            print(f"budgateway: --bind: {e}", file=sys.stderr)
            return EXIT_USAGE

    path = None if args.default_config else _find_config(args)
    if not args.default_config and path is None:
        print(
            "budgateway: no config file: pass --config-file PATH, set TENSORZERO_CONFIG_PATH, "
            "put a tensorzero.toml in the current folder, or use --default-config for the built-in dummy models",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        registry = build_registry()
    except RegistryError as e:
        print(f"budgateway: invalid config:\n{e}", file=sys.stderr)
        return 1
    redis_url = os.environ.get("TENSORZERO_REDIS_URL") or None
    load = _loader(path, registry, redis_url)
    try:
        config = load()
    except ConfigError as e:
        print(f"budgateway: invalid config:\n{e}", file=sys.stderr)
        return 1
    if args.check_config:
        functions = len(config.tensorzero.functions) if config.tensorzero is not None else 0
        print(f"{config.source}: OK ({len(config.models)} models, {functions} functions)")
        if config.unimplemented:
            print(f"{config.source}: accepted but not implemented: {', '.join(config.unimplemented)}")
        return 0

    settings = config.gateway
    configure_logging(args.log_format, debug=settings.debug)
    if config.unimplemented:
        logging.getLogger("gateway.config").warning(
            "%s: TensorZero keys accepted but not implemented (they have no effect): %s",
            config.source, ", ".join(config.unimplemented))
    host, port = bind if bind is not None else (settings.host, settings.port)
    workers = args.workers if args.workers is not None else settings.workers
    if workers == 0:
        workers = os.cpu_count() or 1
    from gateway.server.master import serve

    return serve(config, registry, load, host=host, port=port, workers=workers, redis_url=redis_url)


def _loader(path: str | None, registry: Mapping, redis_url: str | None) -> Callable[[], Config]:
    """Reads and checks the config (at start, and again on SIGHUP); raises ConfigError or KeyLoadError."""

    def load() -> Config:
        config = load_config_text(DEFAULT_CONFIG, DEFAULT_SOURCE, registry) if path is None else load_config(path, registry)
        auth_enabled(config, redis_url)
        prepare_observers(config)
        try:
            load_decryptor()
        except KeyLoadError as e:
            raise ConfigError(config.source, [str(e)]) from None
        return config

    return load
