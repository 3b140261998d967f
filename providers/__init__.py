"""Provider plug-ins: the contract, the registry, the upstream HTTP client and one module per type."""
