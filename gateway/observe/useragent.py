"""What a User-Agent string says: browser, OS, device type, bot or not (ua-parser, its bundled regexes).

Parsing one new string costs about a millisecond of regex matching, so results are kept per distinct
string (a gateway's clients send few); ``warm()`` compiles the regexes once, before the workers fork.
"""

from __future__ import annotations

import re
from functools import lru_cache

import ua_parser

__all__ = ["Agent", "parse_agent", "warm"]

_CACHE = 4096
_BOT_WORDS = re.compile(r"bot|crawler|spider|scraper", re.IGNORECASE)
_TABLET_FAMILIES = ("iPad", "Kindle", "Tablet")
_MOBILE_OS = ("iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS")


class Agent:
    __slots__ = ("device_type", "browser_name", "browser_version", "os_name", "os_version", "is_bot")

    def __init__(self, device_type: str | None = None, browser_name: str | None = None,
                 browser_version: str | None = None, os_name: str | None = None, os_version: str | None = None,
                 is_bot: bool = False) -> None:
        self.device_type = device_type
        self.browser_name = browser_name
        self.browser_version = browser_version
        self.os_name = os_name
        self.os_version = os_version
        self.is_bot = is_bot


#: A request that sent no User-Agent.
NO_AGENT = Agent()


def _version(part) -> str | None:
    if part is None or not part.major:
        return None
    return f"{part.major}.{part.minor}" if part.minor else part.major


def _device_type(result, text: str, is_bot: bool) -> str:
    if is_bot:
        return "bot"
    device = result.device.family if result.device is not None else ""
    brand = result.device.brand or "" if result.device is not None else ""
    if any(word in device or word in brand for word in _TABLET_FAMILIES):
        return "tablet"
    os_name = result.os.family if result.os is not None else ""
    if os_name == "Android" and "Mobile" not in text:
        return "tablet"  # Android tablets' browsers leave "Mobile" out
    if os_name in _MOBILE_OS or "Mobi" in text:
        return "mobile"
    return "desktop"


@lru_cache(maxsize=_CACHE)
def parse_agent(text: str) -> Agent:
    if not text:
        return NO_AGENT
    result = ua_parser.parse(text)
    spider = result.device is not None and result.device.family == "Spider"
    is_bot = spider or _BOT_WORDS.search(text) is not None
    browser = result.user_agent
    os_ = result.os
    return Agent(
        device_type=_device_type(result, text, is_bot),
        browser_name=browser.family if browser is not None else None,
        browser_version=_version(browser),
        os_name=os_.family if os_ is not None else None,
        os_version=_version(os_),
        is_bot=is_bot,
    )


def warm() -> None:
    """Compile the regexes now (a quarter of a second), not on some request's time."""
    ua_parser.parse("Mozilla/5.0 (X11; Linux x86_64) budgateway/warm")
