"""Blocking rules in budapp's format, read once and compiled into a ``RuleSet`` matched per request.

A rule: ``id``, ``rule_type`` (IP_BLOCKING | COUNTRY_BLOCKING | USER_AGENT_BLOCKING |
RATE_BASED_BLOCKING), ``name``, ``priority`` (higher first), ``status`` (only ACTIVE applies),
``expires_at`` (ISO time or null), ``action`` (``block``, or ``log``: recorded, let through), ``config``.

Compiled at load: address ranges into elementary intervals searched by bisection, countries into a
dict, every user-agent substring of every rule into one trie-shaped regex that screens a user
agent in a single pass (the rules' own patterns run only when it hits). A request then costs a few
lookups however many rules there are.
"""

from __future__ import annotations

import bisect
import datetime
import fnmatch
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Match", "Rule", "RuleSet", "parse_rule", "parse_rules"]

log = logging.getLogger(__name__)

RULE_TYPES = ("IP_BLOCKING", "COUNTRY_BLOCKING", "USER_AGENT_BLOCKING", "RATE_BASED_BLOCKING")
ACTIONS = ("block", "log")


class Rule:
    """One parsed rule; ``index`` is its place in priority order within its set."""

    __slots__ = ("id", "rule_type", "name", "priority", "action", "expires_at", "networks", "countries",
                 "patterns", "literals", "threshold", "window_s", "index")

    def __init__(self, rule_id: str, rule_type: str, name: str, priority: int, action: str,
                 expires_at: float | None) -> None:
        self.id = rule_id
        self.rule_type = rule_type
        self.name = name
        self.priority = priority
        self.action = action
        #: Unix seconds after which the rule no longer applies (None: never).
        self.expires_at = expires_at
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.countries: frozenset[str] = frozenset()
        self.patterns: re.Pattern | None = None
        #: What a user agent must contain for each pattern (None: a pattern that must always be run).
        self.literals: tuple[str | None, ...] = ()
        self.threshold = 0
        self.window_s = 0
        self.index = 0


class Match:
    """A rule a request matched, and why (the reason a client reads unless Redis has one for the rule)."""

    __slots__ = ("rule", "reason")

    def __init__(self, rule: Rule, reason: str) -> None:
        self.rule = rule
        self.reason = reason


def _time(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError("expires_at: expected an ISO time or null")
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _strings(config: Mapping, *keys: str) -> list[str]:
    found: list[str] = []
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"config.{key}: expected an array of strings")
        found += value
    return found


def _literal(pattern: str) -> str | None:
    """The text a user agent must hold for ``pattern`` to match it (lowercase), None when there is
    none to tell (a regex, a bare ``*``)."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        return None
    if "?" in pattern or "[" in pattern:
        return None  # a character class or a one-character wildcard: no literal to screen for
    if "*" in pattern:
        longest = max(pattern.split("*"), key=len)
        return longest.lower() or None
    return pattern.lower()


def _trie(words: Iterable[str]) -> tuple[dict, re.Pattern]:
    """The trie of ``words`` and one regex finding any of them, shaped as that trie: each position
    costs a branch or two, not one try per word."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return root, re.compile(build(root))


def _words_in(root: dict, text: str, start: int) -> set[str]:
    """Every word of the trie ``root`` that occurs in ``text`` at or after ``start``."""
    found = set()
    for i in range(start, len(text)):
        node = root
        j = i
        while True:
            if "" in node:
                found.add(text[i:j])
            if j == len(text):
                break
            node = node.get(text[j])
            if node is None:
                break
            j += 1
    return found


def _ua_pattern(pattern: str) -> str:
    """A user-agent pattern as regex source: ``/re/`` as it is, a ``*`` glob over the whole agent,
    anything else a substring (all case-insensitive)."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        re.compile(pattern[1:-1])  # raises re.error for a bad one
        return pattern[1:-1]
    if "*" in pattern:
        return "^" + fnmatch.translate(pattern).removesuffix(r"\Z").removeprefix("(?s:").removesuffix(")") + r"\Z"
    return re.escape(pattern)


def parse_rule(data: Any, where: str, now: float | None = None) -> Rule | None:
    """One rule; None when it does not apply now (not ACTIVE, expired). Raises ``ValueError`` with the
    reason when it is not a valid rule."""
    if not isinstance(data, Mapping):
        raise ValueError("expected an object")
    rule_id = data.get("id")
    if not isinstance(rule_id, (str, int)) or isinstance(rule_id, bool) or rule_id == "":
        raise ValueError("id: missing")
    rule_type = data.get("rule_type")
    if rule_type not in RULE_TYPES:
        raise ValueError(f"rule_type: one of {', '.join(RULE_TYPES)}")
    action = str(data.get("action") or "block").lower()
    if action not in ACTIONS:
        raise ValueError("action: block or log")
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError("priority: expected an integer")
    status = str(data.get("status") or "ACTIVE").upper()
    expires_at = _time(data.get("expires_at"))
    config = data.get("config") or {}
    if not isinstance(config, Mapping):
        raise ValueError("config: expected an object")
    rule = Rule(str(rule_id), rule_type, str(data.get("name") or rule_id), priority, action, expires_at)
    if rule_type == "IP_BLOCKING":
        for text in _strings(config, "ip_addresses", "ips", "cidrs"):
            try:
                rule.networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"config: {text!r} is not an IP address or CIDR range") from None
        if not rule.networks:
            raise ValueError("config: no ip_addresses, ips or cidrs")
    elif rule_type == "COUNTRY_BLOCKING":
        rule.countries = frozenset(c.strip().upper() for c in _strings(config, "countries", "country_codes"))
        if not rule.countries:
            raise ValueError("config: no countries or country_codes")
    elif rule_type == "USER_AGENT_BLOCKING":
        patterns = _strings(config, "patterns")
        if not patterns:
            raise ValueError("config: no patterns")
        rule.literals = tuple(_literal(p) for p in patterns)
        try:
            rule.patterns = re.compile("|".join(f"(?:{_ua_pattern(p)})" for p in patterns), re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"config.patterns: a bad regex ({e})") from None
    else:
        threshold = config.get("threshold", config.get("requests_per_minute", 100))
        window = config.get("window_seconds")
        if window is None:
            window = 60 * config.get("window_minutes", 1) if "window_minutes" in config else 60
        for name, value in (("threshold", threshold), ("window_seconds", window)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config.{name}: expected a whole number > 0")
        rule.threshold, rule.window_s = threshold, window
    if status != "ACTIVE":
        return None
    if expires_at is not None and expires_at <= (now if now is not None else _now()):
        return None
    return rule


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def parse_rules(raw: Any, where: str) -> list[Rule]:
    """The rules of a JSON array as budapp writes it; a rule that does not parse is skipped, logged."""
    if not isinstance(raw, list):
        log.warning("%s: not a JSON array of rules; ignored", where)
        return []
    rules = []
    for i, data in enumerate(raw):
        try:
            rule = parse_rule(data, where)
        except ValueError as e:
            log.warning("%s[%d]: %s; the rule is skipped", where, i, e)
            continue
        if rule is not None:
            rules.append(rule)
    return rules


class _Ranges:
    """Address ranges of many rules, cut into elementary intervals; a lookup is one bisection."""

    def __init__(self, rules: Iterable[Rule], version: int) -> None:
        events: list[tuple[int, int, int]] = []  # (address, +1 start / -1 after end, rule index)
        for rule in rules:
            for net in rule.networks:
                if net.version == version:
                    events.append((int(net.network_address), 1, rule.index))
                    events.append((int(net.broadcast_address) + 1, -1, rule.index))
        events.sort()
        self._starts: list[int] = []
        self._rules: list[tuple[int, ...]] = []
        active: dict[int, int] = {}
        for i, (address, kind, index) in enumerate(events):
            active[index] = active.get(index, 0) + kind
            if active[index] == 0:
                del active[index]
            if i + 1 < len(events) and events[i + 1][0] == address:
                continue
            self._starts.append(address)
            self._rules.append(tuple(sorted(active)))

    def lookup(self, address: int) -> tuple[int, ...]:
        at = bisect.bisect_right(self._starts, address) - 1
        return self._rules[at] if at >= 0 else ()


class RuleSet:
    """Rules in priority order (highest first; equal priorities keep their order), compiled."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        ordered = sorted(rules, key=lambda r: -r.priority)
        for i, rule in enumerate(ordered):
            rule.index = i
        self.rules = ordered
        self._v4 = _Ranges(ordered, 4)
        self._v6 = _Ranges(ordered, 6)
        self._countries: dict[str, list[int]] = {}
        for rule in ordered:
            for country in rule.countries:
                self._countries.setdefault(country, []).append(rule.index)
        agents = [r for r in ordered if r.patterns is not None]
        # NOTE: one pass of a trie over the lowercased agent screens every literal of every rule; the
        # rules' own patterns run only when it hits, and always for rules with a pattern it cannot screen.
        self._by_literal: dict[str, list[Rule]] = {}
        for r in agents:
            for lit in r.literals:
                if lit is not None:
                    self._by_literal.setdefault(lit, []).append(r)
        self._trie, self._agent_screen = _trie(self._by_literal) if self._by_literal else ({}, None)
        always = [r for r in agents if None in r.literals]
        self._agents_always = always
        self._always_screen = re.compile("|".join(f"(?:{r.patterns.pattern})" for r in always),
                                         re.IGNORECASE) if always else None
        self.rate_rules = [r for r in ordered if r.rule_type == "RATE_BASED_BLOCKING"]
        self.has_countries = bool(self._countries)

    def __len__(self) -> int:
        return len(self.rules)

    def matches(self, client_ip: str, country: str | None, user_agent: str) -> list[Match]:
        """The rules a request matches (rate rules aside), in priority order."""
        found: set[int] = set()
        version, address = _address(client_ip)
        if version == 4:
            found.update(self._v4.lookup(address))
        elif version == 6:
            found.update(self._v6.lookup(address))
        if country:
            found.update(self._countries.get(country.upper(), ()))
        if user_agent:
            lowered = user_agent.lower()
            hit = self._agent_screen.search(lowered) if self._agent_screen is not None else None
            candidates = set()
            if hit is not None:
                for literal in _words_in(self._trie, lowered, hit.start()):
                    candidates.update(self._by_literal[literal])
            if self._always_screen is not None and self._always_screen.search(user_agent):
                candidates.update(self._agents_always)
            found.update(r.index for r in candidates if r.patterns.search(user_agent))
        now = time.time()
        out = []
        for index in sorted(found):
            rule = self.rules[index]
            if rule.expires_at is not None and rule.expires_at <= now:
                continue
            out.append(Match(rule, _reason(rule, client_ip, country, user_agent)))
        return out


_V4_MAPPED = 0xFFFF << 32


def _address(text: str) -> tuple[int, int]:
    """(4 or 6, the address as an integer), an IPv4-mapped IPv6 address as IPv4; (0, 0) for no address.
    (PERF: inet_pton, a tenth of ``ipaddress.ip_address``.)"""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        return 0, 0
    if value >> 32 == 0xFFFF:
        return 4, value - _V4_MAPPED
    return 6, value


def _reason(rule: Rule, client_ip: str, country: str | None, user_agent: str) -> str:
    if rule.rule_type == "IP_BLOCKING":
        return f"IP {client_ip} is blocked"
    if rule.rule_type == "COUNTRY_BLOCKING":
        return f"Requests from country {country} are blocked"
    if rule.rule_type == "USER_AGENT_BLOCKING":
        return "User agent is blocked"
    return f"Too many requests from {client_ip}"
