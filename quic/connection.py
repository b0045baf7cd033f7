"""aioquic's server-side connection classes, with what l4lb changes in them.

- `ServerQuic` (aioquic's `QuicConnection`): holds back the receive window of streams whose
  exchange paused reading; makes l4lb's connection IDs (worker byte, keyed reset tokens);
  acknowledges as TCP does (after two full packets, else within `ACK_DELAY`) and puts the
  ACK in the packet of a response instead of a packet of its own;
- `CountingRecovery` (its loss recovery): counts lost packets per listener;
- `ServerH3` (its `H3Connection`): announces the listener's QPACK limits; encodes response
  fields without the QPACK dynamic table (`StaticQpackEncoder`); reads a request's Host as
  its :authority when :authority is missing (RFC 9114 §4.3.1).

Each overrides as little as it can of aioquic's internals (attributes and methods of 1.x);
tests/e2e/test_http3*.py exercise every one of them against a real aioquic client.
"""

from __future__ import annotations

import os
from typing import Any

import pylsqpack
from aioquic.h3.connection import H3Connection, HeadersState
from aioquic.quic.connection import QuicConnection, QuicConnectionId
from aioquic.quic.recovery import QuicPacketRecovery
from aioquic.tls import Epoch

from quic.settings import CID_LENGTH, reset_token

__all__ = ["ACK_DELAY", "CountingRecovery", "ServerH3", "ServerQuic", "StaticQpackEncoder"]

ACK_DELAY = 0.02  # seconds: under the max_ack_delay aioquic announces (25 ms)
_ACK_NOW = 2 * 1200  # bytes of ack-eliciting packets: two full ones are acknowledged at once


class ServerQuic(QuicConnection):
    """aioquic's connection, holding back the receive window of paused streams (`held`), with
    l4lb's connection IDs: the first byte is the worker's index (`prefix`; the kernel steers
    short header packets by it, quic/steering.py) and each ID's stateless reset token comes
    from the listener's key (quic/reset.py), where aioquic draws both at random."""

    held: set[int]
    prefix = b""
    reset_key = b""
    data_queued = False  # stream data queued since the last datagrams_to_send
    unacked = 0  # bytes of ack-eliciting 1-RTT packets received since our last ACK

    def own_cids(self, prefix: bytes, reset_key: bytes, listener: Any) -> None:
        """Replace the first connection ID aioquic drew (before any packet is sent); count
        lost packets in `listener`."""
        self._loss.__class__ = CountingRecovery
        self._loss.listener = listener  # type: ignore[attr-defined]
        self.prefix, self.reset_key = prefix, reset_key
        first = self._host_cids[0]
        first.cid = self.new_cid()
        first.stateless_reset_token = reset_token(reset_key, first.cid)
        self.host_cid = self._local_initial_source_connection_id = first.cid

    def new_cid(self) -> bytes:
        return self.prefix + os.urandom(CID_LENGTH - len(self.prefix))

    def _replenish_connection_ids(self) -> None:
        while len(self._host_cids) < min(8, self._remote_active_connection_id_limit):
            cid = self.new_cid()
            self._host_cids.append(
                QuicConnectionId(
                    cid=cid,
                    sequence_number=self._host_cid_seq,
                    stateless_reset_token=reset_token(self.reset_key, cid),
                )
            )
            self._host_cid_seq += 1

    # -- acknowledgements --------------------------------------------------------------------
    # aioquic acknowledges every ack-eliciting packet 1 ms after it came (its `_ack_delay`),
    # and writes an ACK frame only once that time has come. A request whose response takes
    # more than a millisecond (any server behind a proxy), and the QPACK acknowledgement a
    # client sends after a response, each cost a datagram holding an ACK alone. RFC 9000
    # §13.2.1-2 allows up to max_ack_delay and suggests an ACK every two ack-eliciting
    # packets, which for small packets is that same extra datagram; l4lb does what TCP does
    # (RFC 1122 §4.2.3.2: every two full-sized segments): an ACK at once when two full
    # packets' worth is unacknowledged (uploads keep their ACK clock), else `ACK_DELAY`
    # after the first, in the next packet that leaves, usually the response's.

    def _payload_received(self, context: Any, plain: bytes, crypto_frame_required: bool = False):
        eliciting, probing = super()._payload_received(
            context, plain, crypto_frame_required=crypto_frame_required
        )
        if eliciting and context.epoch == Epoch.ONE_RTT:
            self.unacked += len(plain) or 1
        return eliciting, probing

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        before = self.unacked
        super().receive_datagram(data, addr, now)
        if self.unacked != before:
            space = self._spaces.get(Epoch.ONE_RTT)
            if space is not None and space.ack_at is not None:
                if self.unacked >= _ACK_NOW:
                    space.ack_at = now
                elif not before:
                    space.ack_at = now + ACK_DELAY

    def _write_ack_frame(self, builder: Any, space: Any, now: float) -> None:
        if space is self._spaces.get(Epoch.ONE_RTT):
            self.unacked = 0
        super()._write_ack_frame(builder, space, now)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if data or end_stream:
            self.data_queued = True
        super().send_stream_data(stream_id, data, end_stream)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """aioquic's datagrams, with the ACK held back sent now if stream data goes (sooner
        than the delay is always allowed): the ACK rides in the response's packet."""
        if self.data_queued:
            self.data_queued = False
            space = self._spaces.get(Epoch.ONE_RTT)
            if space is not None and space.ack_at is not None and space.ack_at > now:
                space.ack_at = now
        return super().datagrams_to_send(now)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.stream_id in self.held:
            return
        super()._write_stream_limits(builder, space, stream)


class CountingRecovery(QuicPacketRecovery):
    """aioquic's loss recovery, counting the packets it declares lost (or retransmits on a
    probe timeout) in the listener's `h3_packets_lost`."""

    listener: Any = None

    def _on_packets_lost(self, *, packets: Any, **kw: Any) -> None:
        packets = list(packets)
        if self.listener is not None:
            self.listener.h3_packets_lost += len(packets)
        super()._on_packets_lost(packets=packets, **kw)


class StaticQpackEncoder:
    """pylsqpack's encoder, told the client allows no dynamic table whatever it announces.

    With the client's table (aioquic's clients offer 4 KB), each response inserts its fields
    on our encoder stream and refers to them, and the client then owes a Section
    Acknowledgement on its decoder stream for every response: a datagram or more each way
    per response, to save a few dozen bytes of a head that the static table and literals
    already make small. nginx and HAProxy encode HTTP/3 responses without the dynamic table
    too, as l4lb's HTTP/2 does (l7/hpackout.py). (pylsqpack's `Encoder` cannot be
    subclassed, so this holds one and lends out its bound methods.)"""

    __slots__ = ("encode", "feed_decoder", "lsqpack")

    def __init__(self) -> None:
        self.lsqpack = pylsqpack.Encoder()
        self.encode = self.lsqpack.encode
        self.feed_decoder = self.lsqpack.feed_decoder

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        return self.lsqpack.apply_settings(max_table_capacity=0, blocked_streams=0)


class ServerH3(H3Connection):
    """aioquic's H3 with our QPACK limits and encoder: its constructor assigns the defaults
    (4096, 16) and announces them at once, so the two attributes read the values set before
    it runs; the encoder only meets the client's SETTINGS later, so it is swapped after."""

    qpack_table = 4096
    qpack_blocked = 16
    _max_table_capacity = property(lambda self: self.qpack_table, lambda self, v: None)
    _blocked_streams = property(lambda self: self.qpack_blocked, lambda self, v: None)

    def __init__(self, quic: QuicConnection, table: int, blocked: int) -> None:
        self.qpack_table = table
        self.qpack_blocked = blocked
        super().__init__(quic)
        self._encoder = StaticQpackEncoder()

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> list:
        """A request's header section, with `:authority` taken from Host if it has none.

        RFC 9114 §4.3.1 lets a request carry Host instead of :authority (HTTP/2's RFC 9113
        §8.3.1 says the same, and l4lb's HTTP/2 takes it), but aioquic's validation, which
        runs on what this returns, requires :authority and closes the whole connection with
        H3_MESSAGE_ERROR. aioquic has no hook for it, so the field is filled in here, before
        the check: the pipeline then sees Host and an equal :authority (and answers 400 to
        a second, different Host, as it does on HTTP/2). Trailers are left alone."""
        headers = super()._decode_headers(stream_id, frame_data)
        stream = self._stream.get(stream_id)
        if stream is None or stream.headers_recv_state != HeadersState.INITIAL:
            return headers
        at = 0
        host = None
        for name, value in headers:
            if name[:1] != b":":
                if name == b"host" and host is None:
                    host = value
                continue
            if name == b":authority":
                return headers
            at += 1
        if not host:
            return headers  # (aioquic refuses it, as RFC 9114 §4.3.1 asks)
        return [*headers[:at], (b":authority", host), *headers[at:]]
