"""Which local addresses ICE offers as host candidates.

aioice gathers host candidates from every interface address *except* 127.0.0.1, so two
peers on a machine without another address (a CI container, a laptop offline) never
connect. ``use_host_addresses(["127.0.0.1"])`` replaces aioice's address gathering
(``aioice.ice.get_host_addresses``, the one function that lists them) for this process;
``use_host_addresses(None)`` restores it. The same switch pins ICE to a namespace's veth
address when talking to Janus. It is process-wide, like aioice's own function.
"""

from __future__ import annotations

import aioice.ice

_ORIGINAL = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str] | None) -> None:
    """Gather host candidates on exactly ``addresses`` (IPv4/IPv6 literals), or restore
    aioice's own gathering with ``None``."""
    if addresses is None:
        aioice.ice.get_host_addresses = _ORIGINAL
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
