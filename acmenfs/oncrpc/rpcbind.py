"""Optional registration with the local portmapper (PMAP v2 SET/UNSET, RFC 1833).

Owns telling rpcbind which port serves which program so that clients that ask
the portmapper (``rpcinfo -p``, kernel mounts) find us. Off by default: the
server works without any portmapper when clients are told the ports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from acmenfs.oncrpc.client import RpcClient, RpcError
from acmenfs.oncrpc.xdr import Packer, Unpacker

log = logging.getLogger("acmenfs.oncrpc.rpcbind")

PMAP_PROGRAM = 100000
PMAP_VERSION = 2
PMAP_PORT = 111
PMAPPROC_SET = 1
PMAPPROC_UNSET = 2
PMAPPROC_GETPORT = 3
IPPROTO = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Mapping:
    prog: int
    vers: int
    protocol: str
    port: int

    def encode(self) -> bytes:
        packer = Packer()
        packer.pack_uint(self.prog)
        packer.pack_uint(self.vers)
        packer.pack_uint(IPPROTO[self.protocol])
        packer.pack_uint(self.port)
        return packer.get_buffer()


def _call(proc: int, mapping: Mapping, host: str, timeout: float) -> int:
    with RpcClient(host, PMAP_PORT, timeout=timeout) as client:
        return Unpacker(client.call(PMAP_PROGRAM, PMAP_VERSION, proc, mapping.encode())).unpack_uint()


def register(mappings: list[Mapping], host: str = "127.0.0.1", timeout: float = 5.0) -> list[Mapping]:
    """SET each mapping after clearing stale ones; returns those that took.

    PMAP UNSET removes a (program, version) for every protocol, so all stale
    entries are cleared first and the new ones set afterwards.
    """
    unregister(mappings, host, timeout)
    done = []
    for mapping in mappings:
        try:
            if _call(PMAPPROC_SET, mapping, host, timeout):
                done.append(mapping)
            else:
                log.warning("portmapper refused %s", mapping)
        except (OSError, RpcError) as exc:
            log.warning("portmapper registration of %s failed: %s", mapping, exc)
    return done


def unregister(mappings: list[Mapping], host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    for mapping in {(m.prog, m.vers): m for m in mappings}.values():
        try:
            _call(PMAPPROC_UNSET, mapping, host, timeout)
        except (OSError, RpcError) as exc:
            log.warning("portmapper unregistration of %s failed: %s", mapping, exc)


def get_port(prog: int, vers: int, protocol: str = "tcp", host: str = "127.0.0.1",
             timeout: float = 5.0) -> int:
    """Ask the portmapper for a program's port (0 when not registered)."""
    return _call(PMAPPROC_GETPORT, Mapping(prog, vers, protocol, 0), host, timeout)
