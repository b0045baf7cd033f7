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
its predecessor's connection IDs with stateless resets, whose key every worker shares).

A reload that adds an HTTP/3 address: the supervisor binds its group the same way and hands
each running worker its socket over a datagram socket pair made for this when the worker
was started (SCM_RIGHTS, `send_group_socket`), before it signals the reload; the worker
takes what came (`received_group_sockets`) as it applies the new config. A reload that
removes one: the supervisor and the workers close their copies (a worker's endpoint keeps
its own until its last connection ends); an address removed and added back before that
shares the kernel's group with the old sockets, so steering is off for it until they close.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
from typing import Any

from l4lb.config.values import Address
from l4lb.errors import L4lbError
from l4lb.listener import bound_socket

__all__ = [
    "CID_PROGRAM",
    "attach_cid_program",
    "open_steered_group",
    "received_group_sockets",
    "send_group_socket",
    "steered_addresses",
    "steered_groups",
]

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


def steered_addresses(config: Any) -> set[str]:
    """The UDP addresses (as text) of the `https` listeners with `http3 = true`."""
    return {
        str(addr)
        for lc in config.listeners
        if lc.protocol == "https" and lc.http.http3
        for addr in lc.bind
    }


def steered_groups(
    config: Any, count: int, have: frozenset[str] = frozenset()
) -> dict[str, list[socket.socket]]:
    """The supervisor's groups: for each UDP address of an `https` listener with
    `http3 = true` and not in `have`, `count` steered sockets (str(address) -> sockets in
    worker order). Raises L4lbError naming the listener when one cannot be bound or steered."""
    groups: dict[str, list[socket.socket]] = {}
    try:
        for lc in config.listeners:
            if lc.protocol != "https" or not lc.http.http3:
                continue
            for addr in lc.bind:
                if str(addr) in groups or str(addr) in have:
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


def send_group_socket(channel: socket.socket, addr: str, sock: socket.socket) -> bool:
    """Hand a running worker its socket `sock` of the group on `addr` over `channel` (its
    end of the socket pair made when it started). False if it could not be sent (the worker
    went away, or has not read what came before): it then binds its own, unsteered."""
    try:
        socket.send_fds(channel, [addr.encode()], [sock.fileno()])
    except OSError as exc:
        log.warning("HTTP/3 on %s: cannot hand a worker its socket: %s", addr, exc)
        return False
    return True


def received_group_sockets(channel: socket.socket) -> dict[str, int]:
    """The sockets the supervisor sent on `channel` since the last call (str(address) ->
    fd, the caller's to close); never blocks."""
    got: dict[str, int] = {}
    channel.setblocking(False)  # (recv_fds of Python 3.11 drops its `flags`: no MSG_DONTWAIT)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 256, 1)
        except (BlockingIOError, InterruptedError):
            return got
        except OSError as exc:
            log.warning("HTTP/3: cannot read the sockets the supervisor sent: %s", exc)
            return got
        if not fds:
            if not message:
                return got  # (the supervisor's end closed)
            continue
        addr = message.decode("utf-8", "replace")
        if addr in got:
            os.close(got[addr])
        got[addr] = fds[0]  # (one at most: `recv_fds` was asked for one)
