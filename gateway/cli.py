"""The ``budgateway`` command: find and check the config, then serve with one or more workers."""

# NOTE: gevent must patch the standard library before anything else imports socket, ssl or threading.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from gateway import __version__  # noqa: E402
from gateway.config.default import DEFAULT_CONFIG, DEFAULT_SOURCE  # noqa: E402
from gateway.config.loader import (  # noqa: E402
    ConfigError,
    auth_enabled,
    load_config,
    load_config_text,
    parse_bind,
)
from gateway.config.schema import Config  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.stores.crypto import KeyLoadError, load_decryptor  # noqa: E402
from providers.registry import RegistryError, build_registry  # noqa: E402

__all__ = ["main"]

log = logging.getLogger("gateway")

#: Exit code for a usage problem: no config found, bad arguments.
EXIT_USAGE = 2
#: Below this many open files a worker cannot hold the thousands of streams it is built for.
_LOW_FILE_LIMIT = 8192


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
        config = load_config_text(DEFAULT_CONFIG, DEFAULT_SOURCE, registry) if path is None else load_config(path, registry)
    except (ConfigError, RegistryError) as e:
        print(f"budgateway: invalid config:\n{e}", file=sys.stderr)
        return 1
    redis_url = os.environ.get("TENSORZERO_REDIS_URL") or None
    try:
        auth_enabled(config, redis_url)
        load_decryptor()
    except (ConfigError, KeyLoadError) as e:
        print(f"budgateway: {e}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"{config.source}: OK ({len(config.models)} models)")
        return 0

    settings = config.gateway
    configure_logging(args.log_format, debug=settings.debug)
    host, port = bind if bind is not None else (settings.host, settings.port)
    workers = args.workers if args.workers is not None else settings.workers
    if workers == 0:
        workers = os.cpu_count() or 1
    return _serve(config, registry, host, port, workers, redis_url)


def _serve(config: Config, registry, host: str, port: int, workers: int, redis_url: str | None) -> int:
    from gateway import server

    settings = config.gateway
    limit = server.raise_open_file_limit()
    if limit < _LOW_FILE_LIMIT:
        log.warning("the open-file limit is %d: at most about %d concurrent streams per worker", limit, limit // 2)

    def worker_main(listener) -> int:
        from gateway.app import create_app

        return server.serve(
            listener,
            lambda: create_app(config, registry, redis_url=redis_url),
            debug=settings.debug,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )

    if workers == 1:
        try:
            listener = server.listen(host, port, reuse_port=False)
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", host, port, e.strerror)
            return 1
        return worker_main(listener)
    master = server.Master(host, port, workers, worker_main, shutdown_timeout_s=settings.shutdown_timeout_s)
    # Before prometheus_client is imported: workers write their metrics to files they share.
    master.share_metrics()
    import gateway.app  # noqa: F401  (loaded once here, shared copy-on-write by the workers)

    try:
        return master.run()
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", host, port, e.strerror)
        return 1
