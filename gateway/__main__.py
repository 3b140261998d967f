"""``python -m gateway``: the same as the ``budgateway`` command."""

from gateway.cli import main

raise SystemExit(main())
