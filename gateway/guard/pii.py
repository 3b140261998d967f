"""The ``local`` guardrail: PII detectors, named patterns and deny words, compiled once.

Detectors: ``email``, ``phone``, ``credit_card`` (Luhn-checked), ``ssn`` (US), ``ip`` (IPv4 and IPv6)
and ``secret`` (strings shaped like API keys and tokens). Each detector runs only where a cheap
screen says it could match (an ``@`` for emails, runs of digits for cards, SSNs, phones and IPv4, a
colon for IPv6, a known key prefix for secrets), so ordinary prose costs a few scans of the text; a
match that fails its check (a 16-digit number whose Luhn sum is wrong, a colon string that is no
IPv6 address) is no finding. Overlapping findings keep the first, then the longest.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping

__all__ = ["DETECTORS", "Finding", "LocalGuard"]

#: The detectors, and the placeholder of each one's findings when they are redacted.
DETECTORS: Mapping[str, str] = {"email": "EMAIL", "phone": "PHONE", "credit_card": "CREDIT_CARD", "ssn": "SSN",
                                "ip": "IP", "secret": "SECRET"}
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
#: Runs of digits and the separators numbers are written with: where cards, SSNs, phones and IPv4 are.
_NUMBERS = re.compile(r"\d[\d ().-]{5,}\d")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(r"(?<![\d+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?![\d])")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
_HEX_OR_COLON = frozenset("0123456789abcdefABCDEF:")
#: What every secret starts with, stems shared (PERF: a substring search each is far faster than one
#: regex tried at every letter; ``_SECRET`` then tells a key from a word that shares its stem).
_SECRET_PREFIXES = ("sk-", "AKIA", "gh", "xox", "AIza", "eyJ", "bud_", "tzk_", "pk_", "rk_")
_SECRET = re.compile(r"(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
                     r"|xox[baprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
                     r"\.[A-Za-z0-9_-]{8,}|(?:bud|tzk|pk|rk)_[A-Za-z0-9]{24,})(?![\w-])")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


#: A digit's Luhn value when doubled.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(text: str) -> bool:
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    return (sum(digits[-1::-2]) + sum(_DOUBLED[d] for d in digits[-2::-2])) % 10 == 0


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class Finding:
    __slots__ = ("kind", "label", "start", "end")

    def __init__(self, kind: str, label: str, start: int, end: int) -> None:
        self.kind = kind
        self.label = label
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Finding({self.kind}, {self.start}:{self.end})"


Scan = Callable[[str, list], None]


class LocalGuard:
    """``pii``: detector names; ``patterns``: name -> regex (redacted as ``[REDACTED_NAME]``);
    ``deny_words``: words or phrases, matched whole and case-insensitively."""

    def __init__(self, pii: Iterable[str] = tuple(DETECTORS), patterns: Mapping[str, str] | None = None,
                 deny_words: Iterable[str] = ()) -> None:
        pii = list(pii)
        for name in pii:
            if name not in DETECTORS:
                raise ValueError(f'unknown detector "{name}" (one of: {", ".join(DETECTORS)})')
        self._scans: list[Scan] = []
        if "email" in pii:
            self._scans.append(_emails)
        numeric = [(rx, name) for rx, name in ((_CARD, "credit_card"), (_SSN, "ssn"), (_PHONE, "phone"),
                                                (_IPV4, "ip")) if name in pii]
        if numeric:
            self._scans.append(_numbers(numeric))
        if "ip" in pii:
            self._scans.append(_ipv6)
        if "secret" in pii:
            self._scans.append(_secrets)
        for name, pattern in (patterns or {}).items():
            if not _NAME.match(name):
                raise ValueError(f'pattern "{name}": a name of letters, digits and _')
            try:
                regex = re.compile(pattern)
            except re.error as e:
                raise ValueError(f'pattern "{name}": not a regex ({e})') from None
            self._scans.append(_scan_all(regex, f"pattern:{name}", name.upper()))
        words = sorted({w.strip() for w in deny_words if w.strip()}, key=len, reverse=True)
        if words:
            self._scans.append(_words(words))

    def findings(self, text: str) -> list[Finding]:
        if not text:
            return []
        found: list[Finding] = []
        for scan in self._scans:
            scan(text, found)
        if len(found) < 2:
            return found
        found.sort(key=lambda f: (f.start, -f.end))
        kept = [found[0]]
        for f in found[1:]:
            if f.start >= kept[-1].end:
                kept.append(f)
        return kept

    @staticmethod
    def redact(text: str, findings: list[Finding]) -> str:
        out, at = [], 0
        for f in findings:
            out.append(text[at:f.start])
            out.append(f"[REDACTED_{f.label}]")
            at = f.end
        out.append(text[at:])
        return "".join(out)


# PERF: the scans below start at the characters a finding must hold (an @, a key's prefix) and look
# around them: prose has few of those, where a regex would be tried at every letter.


def _emails(text: str, found: list) -> None:
    at = text.find("@")
    while at >= 0:
        start = at
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if start < at and domain is not None:
            found.append(Finding("email", DETECTORS["email"], start, domain.end()))
        at = text.find("@", at + 1)


def _secrets(text: str, found: list) -> None:
    for prefix in _SECRET_PREFIXES:
        at = text.find(prefix)
        while at >= 0:
            if at == 0 or not (text[at - 1].isalnum() or text[at - 1] in "_-"):
                m = _SECRET.match(text, at)
                if m is not None:
                    found.append(Finding("secret", DETECTORS["secret"], at, m.end()))
            at = text.find(prefix, at + 1)


def _ipv6(text: str, found: list) -> None:
    """IPv6 addresses: each colon's run of hex digits and colons, when it is one (PERF: prose has
    few colons and many letters a-f, so this beats any regex that could start at every letter)."""
    at = text.find(":")
    end = 0
    while at >= 0:
        if at >= end:
            start = at
            while start > 0 and text[start - 1] in _HEX_OR_COLON:
                start -= 1
            end = at
            while end < len(text) and text[end] in _HEX_OR_COLON:
                end += 1
            token = text[start:end].strip(":") if text[start:end].count(":") >= 2 else ""
            bounded = (start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "._")) and (
                end == len(text) or not (text[end].isalnum() or text[end] == "_"))
            if token and bounded and _is_ipv6(text[start:end]):
                found.append(Finding("ip", DETECTORS["ip"], start, end))
        at = text.find(":", max(at + 1, end))


#: ASCII text mapped byte for byte: a digit to "0", a separator numbers are written with to ".",
#: anything else to "x".
_RUN_CLASSES = bytes(48 if 48 <= b <= 57 else 46 if chr(b) in " ().-" else 120 for b in range(256))
#: What a run must hold for each detector's regex to be worth trying on it: the fewest digits, and a
#: separator it cannot do without.
_NEEDS = {"credit_card": (13, ""), "ssn": (9, "-"), "phone": (8, ""), "ip": (4, ".")}


_RUNS = re.compile(rb"0[0.]{5,}0")


def _digit_runs(text: str) -> list[tuple[int, int]]:
    """Where ``_NUMBERS`` matches: a digit, then digits and separators, ending in a digit, 7 long or more."""
    if not text.isascii():
        return [m.span() for m in _NUMBERS.finditer(text)]
    # PERF: on the classes a regex starts with a literal, which the engine searches for at C speed.
    return [m.span() for m in _RUNS.finditer(text.encode("ascii").translate(_RUN_CLASSES))]


def _numbers(detectors: list[tuple[re.Pattern, str]]) -> Scan:
    """Cards, SSNs, phones and IPv4 addresses, looked for only inside runs of digits (a run widened by
    the ``+`` or ``(`` before it). A card-shaped number that fails Luhn is no card, and no phone."""
    detectors = [(regex, kind, *_NEEDS[kind]) for regex, kind in detectors]

    def scan(text: str, found: list) -> None:
        for start, end in _digit_runs(text):
            while start > 0 and text[start - 1] in "+(":
                start -= 1
            span = text[start:end]
            digits = len(span) - span.count(" ") - span.count("-") - span.count(".") - span.count("(") - \
                span.count(")") - span.count("+")
            claimed: list[tuple[int, int]] = []
            for regex, kind, fewest, separator in detectors:
                if digits < fewest or separator not in span:
                    continue
                for m in regex.finditer(span):
                    if kind == "credit_card":
                        claimed.append((m.start(), m.end()))
                        if not _luhn(m.group()):
                            continue
                    elif any(a <= m.start() < b for a, b in claimed):
                        continue
                    found.append(Finding(kind, DETECTORS[kind], start + m.start(), start + m.end()))

    return scan


def _scan_all(regex: re.Pattern, kind: str, label: str) -> Scan:
    def scan(text: str, found: list) -> None:
        for m in regex.finditer(text):
            found.append(Finding(kind, label, m.start(), m.end()))

    return scan


def _words(words: list[str]) -> Scan:
    """Deny words and phrases, whole and in any case: one case-insensitive regex, run only when the
    lowercased text holds one of them (the screen; positions come from the regex on the text itself)."""
    regex = re.compile(rf"(?<!\w)(?:{'|'.join(re.escape(w) for w in words)})(?!\w)", re.IGNORECASE)
    screens = tuple(w.casefold() for w in words)

    def scan(text: str, found: list) -> None:
        folded = text.casefold()
        if not any(w in folded for w in screens):
            return
        for m in regex.finditer(text):
            found.append(Finding("deny_word", "DENIED_WORD", m.start(), m.end()))

    return scan
