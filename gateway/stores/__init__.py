"""State the control plane shares through Redis: API keys, models, provider credentials, and their sync."""
