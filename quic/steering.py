"""QUIC with `workers > 1`: every datagram of a connection reaches the worker that owns it.

SO_REUSEPORT spreads UDP datagrams over the group's sockets by a hash of the 4-tuple, so a
client whose address changes (NAT rebinding, a phone moving from Wi-Fi to 4G) would land on
a worker that does not know its connection. The fix used by Linux QUIC servers without eBPF
maps (it is what the kernel's SO_ATTACH_REUSEPORT_CBPF was made for): the server's
connection IDs carry the worker's index in their first byte (quic/connection.py), and a
classic BPF program on the socket group returns that byte as the index of the socket to
deliver to:

- a short header packet (first bit 0) carries our connection ID right after the first
  byte: the program returns payload byte 1, the index of the worker that made the ID;
- a long header packet (an Initial, 0-RTT or Handshake: before the handshake is done, when
  a client may not migrate, RFC 9000 §9) returns an out-of-range index, and the kernel then
  falls back to its 4-tuple hash, as without a program; the Initial's worker owns it.

The index the program returns is a position in the kernel's group, which is the order the
sockets joined and which the kernel reshuffles when one closes. So the supervisor binds the
group itself, one socket per worker in index order (socket i for worker i), keeps every
one open for its whole life and hands socket i to worker i at each (re)start
(`--quic-socket`): positions never move, a restarted worker gets its place back (and answers
its predecessor's connection IDs with stateless resets, whose key every worker shares). A
listener that a reload adds gets per-worker sockets bound by each worker, without steering
(the state before this module), until the next restart.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from typing import Any

from l4lb.config.values import Address
from l4lb.errors import L4lbError
from l4lb.listener import bound_socket

__all__ = ["CID_PROGRAM", "attach_cid_program", "open_steered_group", "steered_groups"]

log = logging.getLogger("l4lb")

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}; offsets are from the UDP payload.
_LD_B_ABS, _JSET_K, _RET_A, _RET_K = 0x30, 0x45, 0x16, 0x06
CID_PROGRAM = [
    (_LD_B_ABS, 0, 0, 0),  # A = first byte
    (_JSET_K, 2, 0, 0x80),  # long header: to the last instruction
    (_LD_B_ABS, 0, 0, 1),  # A = first byte of the destination connection ID
    (_RET_A, 0, 0, 0),  # the socket at index A (out of range: the hash)
    (_RET_K, 0, 0, 0xFFFFFFFF),  # out of range: the kernel's 4-tuple hash
]


def attach_cid_program(sock: socket.socket) -> None:
    """Attach `CID_PROGRAM` to the reuseport group of `sock` (any member will do). No
    privilege is needed. Raises OSError where the kernel refuses (not Linux 4.5+)."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in CID_PROGRAM)
    filt = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(CID_PROGRAM), ctypes.addressof(filt))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def open_steered_group(addr: Address, count: int) -> list[socket.socket]:
    """`count` UDP sockets on `addr` in one SO_REUSEPORT group, in index order, steered by
    connection ID. Raises OSError (the caller names the listener)."""
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            group.append(bound_socket(addr, socket.SOCK_DGRAM, reuse_port=True))
    except BaseException:
        for sock in group:
            sock.close()
        raise
    try:
        attach_cid_program(group[0])
    except OSError as exc:  # not Linux, or a kernel without it: the 4-tuple hash alone
        log.warning(
            "HTTP/3 on %s: no connection-ID steering (%s): a client whose address changes "
            "may reach another worker, which resets its connection",
            addr,
            exc.strerror or exc,
        )
    return group


def steered_groups(config: Any, count: int) -> dict[str, list[socket.socket]]:
    """The supervisor's groups: for each UDP address of an `https` listener with
    `http3 = true`, `count` steered sockets (str(address) -> sockets in worker order).
    Raises L4lbError naming the listener when one cannot be bound or steered."""
    groups: dict[str, list[socket.socket]] = {}
    try:
        for lc in config.listeners:
            if lc.protocol != "https" or not lc.http.http3:
                continue
            for addr in lc.bind:
                if str(addr) in groups:
                    continue
                try:
                    groups[str(addr)] = open_steered_group(addr, count)
                except OSError as exc:
                    raise L4lbError(
                        f"listener {lc.name}: cannot listen on {addr} (UDP, HTTP/3, "
                        f"{count} workers): {exc.strerror or exc}"
                    ) from None
    except BaseException:
        for group in groups.values():
            for sock in group:
                sock.close()
        raise
    return groups
