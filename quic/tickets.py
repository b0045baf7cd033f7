"""Session tickets for 0-RTT (RFC 9001 §4.6), one store per worker process.

aioquic issues a ticket after each handshake (when a handler is set) and asks for it back
by its opaque label when a client resumes. The store keeps the ticket with the server name
of the connection that got it: a ticket resumes only a connection for the same name (RFC
8446 §4.6.1: the SNI must match, else the resumed session would be authenticated by another
certificate). Tickets are single use: fetching one removes it, so a replayed ClientHello
(the same ticket twice) gets no 0-RTT (RFC 8446 §8.1, the single-use-ticket defence).
Bounded: the oldest tickets go first. Per worker, so a client that resumes on another
worker (its 4-tuple changed) gets a full handshake: correct, only slower; stated in
docs/CONFIG.md.
"""

from __future__ import annotations

from collections import OrderedDict

from aioquic.tls import SessionTicket

__all__ = ["TicketStore"]


class TicketStore:
    __slots__ = ("limit", "tickets")

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self.tickets: OrderedDict[bytes, tuple[str | None, SessionTicket]] = OrderedDict()

    def add(self, sni: str | None, ticket: SessionTicket) -> None:
        self.tickets[ticket.ticket] = (sni, ticket)
        while len(self.tickets) > self.limit:
            self.tickets.popitem(last=False)

    def take(self, sni: str | None, label: bytes) -> SessionTicket | None:
        entry = self.tickets.pop(label, None)
        if entry is None or entry[0] != sni:
            return None
        return entry[1]
