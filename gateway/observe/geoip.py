"""Where a client address is: MaxMind City (or Country) and ASN databases, read with maxminddb.

Each database is opened once per worker, memory-mapped (the pages are shared between workers by the
page cache). Private, loopback and other non-global addresses are not looked up. A missing or unreadable
database is a ``GeoIPError`` at start (``check``), never a failure on the request path.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

import maxminddb

__all__ = ["GeoIP", "GeoIPError", "Location", "check"]

#: Lookups remembered per worker (clients repeat their address).
_CACHE = 8192


class GeoIPError(Exception):
    pass


class Location:
    """What the databases say of one address (None where they say nothing)."""

    __slots__ = ("country_code", "country_name", "region", "city", "latitude", "longitude", "timezone",
                 "asn", "isp")

    def __init__(self) -> None:
        self.country_code: str | None = None
        self.country_name: str | None = None
        self.region: str | None = None
        self.city: str | None = None
        self.latitude: float | None = None
        self.longitude: float | None = None
        self.timezone: str | None = None
        self.asn: int | None = None
        self.isp: str | None = None


#: The location of an address the databases are not asked about.
NOWHERE = Location()


def _open(path: str, kinds: tuple[str, ...]) -> maxminddb.Reader:
    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
    except FileNotFoundError:
        raise GeoIPError(f"{path}: no such file") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        raise GeoIPError(f"{path}: not a readable MaxMind database ({e})") from None
    database_type = reader.metadata().database_type
    if not any(kind in database_type for kind in kinds):
        reader.close()
        raise GeoIPError(f"{path}: a {database_type} database, expected one of: {', '.join(kinds)}")
    return reader


def check(city_path: str | None, asn_path: str | None) -> None:
    """Open and close the databases: raise ``GeoIPError`` now rather than in a worker."""
    GeoIP(city_path, asn_path).close()


def _name(record: Any) -> str | None:
    names = record.get("names") if isinstance(record, dict) else None
    return names.get("en") if isinstance(names, dict) else None


class GeoIP:
    def __init__(self, city_path: str | None, asn_path: str | None) -> None:
        self._city = _open(city_path, ("City", "Country")) if city_path else None
        self._asn = _open(asn_path, ("ASN", "ISP")) if asn_path else None
        self.lookup = lru_cache(maxsize=_CACHE)(self._lookup)

    @property
    def enabled(self) -> bool:
        return self._city is not None or self._asn is not None

    def _lookup(self, ip: str) -> Location:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return NOWHERE
        if not address.is_global:
            return NOWHERE
        found = Location()
        if self._city is not None:
            record = self._city.get(address)
            if isinstance(record, dict):
                country = record.get("country") or {}
                found.country_code = country.get("iso_code")
                found.country_name = _name(country)
                subdivisions = record.get("subdivisions") or []
                if subdivisions:
                    found.region = _name(subdivisions[0])
                found.city = _name(record.get("city"))
                location = record.get("location") or {}
                found.latitude = location.get("latitude")
                found.longitude = location.get("longitude")
                found.timezone = location.get("time_zone")
        if self._asn is not None:
            record = self._asn.get(address)
            if isinstance(record, dict):
                found.asn = record.get("autonomous_system_number")
                found.isp = record.get("isp") or record.get("autonomous_system_organization")
        return found

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()
