"""A resolver that answers from a table: DNS names pointing where a test wants, without /etc/hosts."""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class StaticResolver(AbstractResolver):
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(f"{host} does not resolve (static table)")
        return [
            ResolveResult(hostname=host, host=address, port=port,
                          family=socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass
