"""Addresses outside the cluster: which cloud service and region own them.

Reads AWS's published ``ip-ranges.json`` format (``prefixes`` with ``ip_prefix``, ``region``,
``service``; ``ipv6_prefixes`` with ``ipv6_prefix``) from a path or URL. The most specific
prefix wins; among equal prefixes a named service wins over the catch-all ``AMAZON``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from flowlens.model.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CloudOwner:
    service: str  # as the file names it: S3, DYNAMODB, EC2, AMAZON, ...
    region: str


class CloudRanges:
    def __init__(self, document: dict) -> None:
        self._tables: dict[int, dict[tuple[int, int], CloudOwner]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}
        entries = [(p.get("ip_prefix"), p) for p in document.get("prefixes", [])]
        entries += [(p.get("ipv6_prefix"), p) for p in document.get("ipv6_prefixes", [])]
        for prefix, entry in entries:
            if not prefix:
                continue
            net = ipaddress.ip_network(prefix, strict=False)
            key = (net.prefixlen, int(net.network_address))
            owner = CloudOwner(entry.get("service", "AMAZON"), entry.get("region", ""))
            table = self._tables[net.version]
            if key not in table or table[key].service == "AMAZON":
                table[key] = owner
        for version, table in self._tables.items():
            self._lengths[version] = sorted({length for length, _ in table}, reverse=True)

    @classmethod
    def load(cls, source: str) -> CloudRanges:
        try:
            if source.startswith(("http://", "https://")):
                text = httpx.get(source, timeout=30).raise_for_status().text
            else:
                text = Path(source).read_text()
            return cls(json.loads(text))
        except (OSError, httpx.HTTPError) as err:
            raise ConfigError(f"cannot read the cloud IP ranges from {source}: {err}") from err
        except (json.JSONDecodeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{source} is not an ip-ranges.json document: {err}") from err

    def owner(self, ip: str) -> CloudOwner | None:
        address = ipaddress.ip_address(ip)
        bits = 32 if address.version == 4 else 128
        value = int(address)
        table = self._tables[address.version]
        for length in self._lengths[address.version]:
            network = value >> (bits - length) << (bits - length)
            found = table.get((length, network))
            if found is not None:
                return found
        return None
