"""Blocking rules (IP, country, user agent, request rate) and, later, guardrail profiles."""
