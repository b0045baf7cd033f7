"""The server side of HTTP/2 (l7.h2conn), sans-IO: a python-hyper `h2` client's bytes in,
the events and frames out checked by that client (an implementation apart from ours), and
every RFC 9113 rule the connection enforces broken once with frames made by hyperframe.
Any bytes give events or H2ConnectionError, never another exception."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from l7 import h2events as ev
from l7.h2conn import PREFACE, H2Connection

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]


def server(window: int = 65535, max_header_list: int = 32768) -> H2Connection:
    conn = H2Connection(100, max_header_list, 4096, window, False)
    conn.initiate_connection()
    return conn


class Pair:
    """Our server and an h2 client, the bytes carried by hand both ways."""

    def __init__(self, window: int = 65535, client_window: int = 65535) -> None:
        self.server = server(window)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        if client_window != 65535:
            window = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
            self.client.update_settings({window: client_window})
        self.client_events: list = []
        self.to_server()
        self.to_client()
        self.to_server()  # the client's ACK of our SETTINGS

    def to_server(self) -> list:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self) -> list:
        events = self.client.receive_data(self.server.data_to_send())
        self.client_events += events
        return events

    def client_got(self, kind: type) -> list:
        return [e for e in self.client_events if isinstance(e, kind)]


def frames(data: bytes) -> list[Frame]:
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def opened(*extra: bytes, window: int = 65535) -> H2Connection:
    """A server past the preface and SETTINGS (both ways), `extra` frames then read."""
    conn = server(window)
    conn.receive_data(PREFACE + SettingsFrame(0).serialize())
    conn.receive_data(SettingsFrame(0, flags=["ACK"]).serialize())
    conn.data_to_send()
    for data in extra:
        conn.receive_data(data)
    return conn


def headers(sid: int, fields=GET, flags=("END_STREAM", "END_HEADERS"), encoder=None) -> bytes:
    block = (encoder or Encoder()).encode(fields)
    return HeadersFrame(sid, data=block, flags=list(flags)).serialize()


def fails(conn: H2Connection, data: bytes, code: int) -> None:
    with pytest.raises(ev.H2ConnectionError) as caught:
        conn.receive_data(data)
    assert caught.value.code == code
    (goaway,) = [f for f in frames(conn.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaway.error_code == code
    assert conn.receive_data(b"anything") == []  # nothing more is read


def test_request_and_response_round_trip_with_an_h2_client():
    p = Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, [*POST, (b"content-length", b"5")])
    p.client.send_data(sid, b"hello")
    p.client.send_headers(sid, [(b"x-sum", b"1")], end_stream=True)
    events = p.to_server()
    assert [type(e) for e in events] == [
        ev.RequestReceived, ev.DataReceived, ev.TrailersReceived, ev.StreamEnded
    ]  # fmt: skip
    assert events[0].headers == [*POST, (b"content-length", b"5")] and not events[0].ended
    assert (events[1].data, events[1].flow_controlled_length) == (b"hello", 5)
    assert events[2].headers == [(b"x-sum", b"1")]
    s = p.server
    s.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")], False)  # informational
    s.send_headers(sid, [(b":status", b"200"), (b"x-big", b"v" * 40000)], False)  # CONTINUATION
    s.send_data(sid, b"body", False)
    s.send_headers(sid, [(b"grpc-status", b"0")], True)  # trailers
    p.to_client()
    responses = p.client_got(h2.events.ResponseReceived)
    assert [dict(r.headers)[b":status"] for r in responses] == [b"200"]
    assert p.client_got(h2.events.InformationalResponseReceived)
    assert dict(responses[0].headers)[b"x-big"] == b"v" * 40000
    assert [e.data for e in p.client_got(h2.events.DataReceived)] == [b"body"]
    assert p.client_got(h2.events.TrailersReceived)[0].headers == [(b"grpc-status", b"0")]
    assert p.client_got(h2.events.StreamEnded)
    assert sid not in s.streams  # closed both ways: forgotten
    with pytest.raises(ev.StreamClosedError):
        s.send_data(sid, b"late", False)


def test_get_ends_with_its_headers_and_the_response_with_its_data():
    p = Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, GET, end_stream=True)
    events = p.to_server()
    assert [type(e) for e in events] == [ev.RequestReceived, ev.StreamEnded]
    assert events[0].ended
    p.server.send_headers(sid, [(b":status", b"200")], False)
    p.server.send_data(sid, b"x" * 100, True)
    out = frames(p.server.data_to_send())
    assert [type(f) for f in out] == [HeadersFrame, DataFrame]
    assert "END_STREAM" in out[1].flags and sid not in p.server.streams


def test_response_data_keeps_to_the_clients_windows():
    p = Pair(client_window=1000)
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, GET, end_stream=True)
    p.to_server()
    s = p.server
    assert s.local_flow_control_window(sid) == 1000
    s.send_headers(sid, [(b":status", b"200")], False)
    s.send_data(sid, b"a" * 1000, False)
    assert s.local_flow_control_window(sid) == 0
    with pytest.raises(ev.StreamClosedError):  # over the window: a caller's bug, not sent
        s.send_data(sid, b"a", False)
    p.to_client()
    p.client.acknowledge_received_data(1000, sid)
    events = p.to_server()
    assert any(isinstance(e, ev.WindowUpdated) and e.stream_id == sid for e in events)
    assert s.local_flow_control_window(sid) == 1000
    # A new SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window (§6.9.2).
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 3000})
    p.to_server()
    assert s.local_flow_control_window(sid) == 3000


def test_taken_data_is_given_back_once_half_a_window_is_owed():
    conn = opened(headers(1, POST, flags=["END_HEADERS"]), window=1000)
    out = frames(conn.data_to_send())
    assert out == []
    conn.receive_data(DataFrame(1, data=b"a" * 400).serialize())
    conn.acknowledge_received_data(400, 1)
    assert frames(conn.data_to_send()) == []  # 400 of 1000: not yet
    conn.receive_data(DataFrame(1, data=b"a" * 200).serialize())
    conn.acknowledge_received_data(200, 1)
    (update,) = frames(conn.data_to_send())
    assert (update.stream_id, update.window_increment) == (1, 600)
    conn.receive_data(DataFrame(1, data=b"a" * 1000).serialize())  # the window is whole again
    assert conn.streams[1].recv_window == 0


def test_padding_counts_for_flow_control_but_is_not_data():
    frame = DataFrame(1, data=b"abc", flags=["PADDED", "END_STREAM"])
    frame.pad_length = 10
    conn = opened(POST_OPEN)
    (data, end) = conn.receive_data(frame.serialize())
    assert (data.data, data.flow_controlled_length, type(end)) == (b"abc", 14, ev.StreamEnded)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ev.PROTOCOL_ERROR),
        (PREFACE + PingFrame(0).serialize(), ev.PROTOCOL_ERROR),  # not SETTINGS first
    ],
    ids=["http1", "ping-before-settings"],
)
def test_the_preface_and_its_settings_come_first(data, code):
    fails(server(), data, code)


def test_a_preface_in_pieces_is_waited_for():
    conn = server()
    assert conn.receive_data(PREFACE[:10]) == []
    assert conn.receive_data(PREFACE[10:] + SettingsFrame(0).serialize()[:5]) == []
    assert [type(e) for e in conn.receive_data(SettingsFrame(0).serialize()[5:])] == [
        ev.ControlReceived
    ]


def raw(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever hyperframe would refuse to make."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def continuation_flood() -> bytes:
    out = headers(1, flags=["END_STREAM"])
    for _ in range(300):
        out += ContinuationFrame(1, data=b"\x00" * 10).serialize()
    return out


def big_data(sid: int, frames: int) -> bytes:
    return b"".join(DataFrame(sid, data=b"a" * 16384).serialize() for _ in range(frames))


POST_OPEN = headers(1, POST, flags=["END_HEADERS"])
PADDED_PAST = raw(1, 0x4 | 0x8 | 0x1, 1, bytes([200]) + Encoder().encode(GET))
PUSH = PushPromiseFrame(1, promised_stream_id=2, data=b"", flags=["END_HEADERS"]).serialize()
CONNECTION_ERRORS = {
    "oversized frame": (raw(0, 0, 1, b"x" * 0x5000), ev.FRAME_SIZE_ERROR),
    "data on stream 0": (raw(0, 0, 0, b"x"), ev.PROTOCOL_ERROR),
    "data on an idle stream": (DataFrame(1, data=b"x").serialize(), ev.PROTOCOL_ERROR),
    "headers on an even stream": (headers(2), ev.PROTOCOL_ERROR),
    "push promise": (PUSH, ev.PROTOCOL_ERROR),
    "a frame inside a header block": (
        headers(1, flags=["END_STREAM"]) + PingFrame(0).serialize(),
        ev.PROTOCOL_ERROR,
    ),
    "continuation outside a block": (ContinuationFrame(1, data=b"").serialize(), ev.PROTOCOL_ERROR),
    "continuation flood": (continuation_flood(), ev.PROTOCOL_ERROR),
    "padding past the frame": (PADDED_PAST, ev.PROTOCOL_ERROR),
    "hpack garbage": (raw(1, 0x4, 1, b"\xff" * 5), ev.COMPRESSION_ERROR),
    "hpack bomb": (headers(1, [*GET, *[(b"x-bomb", b"a" * 4000)] * 10]), ev.ENHANCE_YOUR_CALM),
    "ping not 8 bytes": (raw(6, 0, 0, b"abcd"), ev.FRAME_SIZE_ERROR),
    "settings not 6-byte items": (raw(4, 0, 0, b"abcd"), ev.FRAME_SIZE_ERROR),
    "enable push 2": (SettingsFrame(0, settings={2: 2}).serialize(), ev.PROTOCOL_ERROR),
    "max frame size too small": (
        SettingsFrame(0, settings={5: 100}).serialize(),
        ev.PROTOCOL_ERROR,
    ),
    "initial window over 2^31-1": (
        SettingsFrame(0, settings={4: 2**31}).serialize(),
        ev.FLOW_CONTROL_ERROR,
    ),
    "window update of 0": (raw(8, 0, 0, bytes(4)), ev.PROTOCOL_ERROR),
    "connection window over 2^31-1": (
        WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(),
        ev.FLOW_CONTROL_ERROR,
    ),
    "window update on an idle stream": (
        WindowUpdateFrame(9, window_increment=1).serialize(),
        ev.PROTOCOL_ERROR,
    ),
    "reset of an idle stream": (RstStreamFrame(9, error_code=8).serialize(), ev.PROTOCOL_ERROR),
    "priority on stream 0": (raw(2, 0, 0, b"\x00\x00\x00\x01\x10"), ev.PROTOCOL_ERROR),
    "data over the connection window": (POST_OPEN + big_data(1, 5), ev.FLOW_CONTROL_ERROR),
}


@pytest.mark.parametrize("data, code", CONNECTION_ERRORS.values(), ids=CONNECTION_ERRORS.keys())
def test_connection_errors_get_goaway_with_their_code(data, code):
    conn = opened()
    fails(conn, data, code)


def test_the_connection_window_is_the_connections_not_the_streams():
    conn = opened(window=2**20)  # big streams, the connection's 64 KiB
    assert len(conn.receive_data(POST_OPEN + big_data(1, 3))) == 4
    fails(conn, DataFrame(1, data=b"a" * 16384).serialize(), ev.FLOW_CONTROL_ERROR)


def invalid(events: list) -> ev.StreamInvalid:
    (event,) = [e for e in events if isinstance(e, ev.StreamInvalid)]
    return event


@pytest.mark.parametrize("sent, end", [(11, False), (5, True), (0, True)])
def test_data_that_disagrees_with_content_length_is_a_stream_error(sent, end):
    fields = [*POST, (b"content-length", b"10")]
    conn = opened(headers(1, fields, flags=["END_HEADERS"]))
    conn.receive_data(DataFrame(1, data=b"a" * 4).serialize())
    flags = ["END_STREAM"] if end else []
    events = conn.receive_data(DataFrame(1, data=b"a" * sent, flags=flags).serialize())
    assert invalid(events).error_code == ev.PROTOCOL_ERROR
    assert not any(isinstance(e, ev.DataReceived) for e in events)  # never reported
    (rst,) = frames(conn.data_to_send())
    assert (type(rst), rst.error_code) == (RstStreamFrame, ev.PROTOCOL_ERROR)
    assert conn.conn_unacked == sent  # the connection's window is given back all the same
    assert 1 not in conn.streams
    conn.receive_data(DataFrame(1, data=b"late").serialize())  # after the reset: dropped
    assert [f for f in frames(conn.data_to_send()) if isinstance(f, RstStreamFrame)] == []


def test_content_length_on_headers_that_end_the_stream_is_a_stream_error():
    conn = opened()
    events = conn.receive_data(headers(1, [*GET, (b"content-length", b"3")]))
    assert invalid(events).stream_id == 1
    assert not any(isinstance(e, ev.RequestReceived) for e in events)


def test_stream_errors_reset_the_stream_and_the_connection_goes_on():
    enc = Encoder()
    conn = opened(headers(1, POST, flags=["END_HEADERS"], encoder=enc))
    # Trailers without END_STREAM.
    events = conn.receive_data(headers(1, [(b"x-a", b"1")], flags=["END_HEADERS"], encoder=enc))
    assert invalid(events).error_code == ev.PROTOCOL_ERROR
    # A WINDOW_UPDATE of 0 on a stream; a stream over 2^31-1.
    conn.receive_data(headers(3, POST, flags=["END_HEADERS"], encoder=enc))
    events = conn.receive_data(b"\x00\x00\x04\x08\x00\x00\x00\x00\x03\x00\x00\x00\x00")
    assert invalid(events).error_code == ev.PROTOCOL_ERROR
    conn.receive_data(headers(5, POST, flags=["END_HEADERS"], encoder=enc))
    events = conn.receive_data(WindowUpdateFrame(5, window_increment=2**31 - 1).serialize())
    assert invalid(events).error_code == ev.FLOW_CONTROL_ERROR
    # DATA over the stream's window.
    conn.receive_data(headers(7, POST, flags=["END_HEADERS"], encoder=enc))
    data = big_data(7, 4) + DataFrame(7, data=b"a").serialize()
    conn.increment_flow_control_window(2**20)
    events = conn.receive_data(data)
    assert invalid(events).error_code == ev.FLOW_CONTROL_ERROR
    # DATA after END_STREAM; a stream that depends on itself.
    conn.receive_data(headers(9, POST, encoder=enc))
    conn.streams[9].send_open = True
    events = conn.receive_data(DataFrame(9, data=b"x").serialize())
    assert invalid(events).error_code == ev.STREAM_CLOSED
    conn.receive_data(headers(11, POST, flags=["END_HEADERS"], encoder=enc))
    events = conn.receive_data(PriorityFrame(11, depends_on=11).serialize())
    assert invalid(events).error_code == ev.PROTOCOL_ERROR
    # The HPACK table stayed in step through all of it: a request indexed in it is read.
    (request, _) = conn.receive_data(headers(13, GET, encoder=enc))
    assert request.headers == GET


def test_client_reset_and_late_frames_on_closed_streams():
    conn = opened(POST_OPEN)
    (reset,) = conn.receive_data(RstStreamFrame(1, error_code=8).serialize())
    assert (type(reset), reset.error_code) == (ev.StreamReset, 8)
    (again,) = conn.receive_data(RstStreamFrame(1, error_code=8).serialize())
    assert type(again) is ev.ControlReceived  # counted against floods, nothing else
    conn.receive_data(DataFrame(1, data=b"x").serialize())  # reset: dropped quietly
    # A stream closed both ways, not reset: DATA on it gets RST_STREAM STREAM_CLOSED once.
    conn.receive_data(headers(3))
    conn.data_to_send()
    conn.send_headers(3, [(b":status", b"204")], True)
    assert 3 not in conn.streams
    conn.data_to_send()
    conn.receive_data(DataFrame(3, data=b"x").serialize() * 2)
    resets = [f for f in frames(conn.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(3, ev.STREAM_CLOSED)]
    conn.receive_data(headers(5))
    conn.send_headers(5, [(b":status", b"204")], True)
    fails(conn, headers(5), ev.STREAM_CLOSED)  # HEADERS on a stream closed both ways


def test_ping_settings_and_goaway():
    conn = opened()
    (ping,) = conn.receive_data(PingFrame(0, opaque_data=b"12345678").serialize())
    assert type(ping) is ev.ControlReceived
    (pong,) = frames(conn.data_to_send())
    assert (pong.opaque_data, "ACK" in pong.flags) == (b"12345678", True)
    conn.receive_data(PingFrame(0, flags=["ACK"]).serialize())
    assert conn.data_to_send() == b""  # an ACK is not answered
    conn.receive_data(SettingsFrame(0, settings={5: 32768, 1: 0}).serialize())
    assert conn.max_outbound_frame_size == 32768
    (ack,) = frames(conn.data_to_send())
    assert "ACK" in ack.flags
    conn.receive_data(headers(1))
    conn.send_headers(1, [(b":status", b"200")], False)  # after SETTINGS_HEADER_TABLE_SIZE:
    (head,) = frames(conn.data_to_send())
    assert head.data == b"\x20\x88"  # a table size update to 0 first, then :status 200
    (end,) = conn.receive_data(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    assert type(end) is ev.ConnectionTerminated


def test_our_settings_and_the_connection_window_go_out_first():
    conn = H2Connection(7, 8192, 256, 1 << 20, True)
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 22)
    settings_frame, update = frames(conn.data_to_send())
    assert settings_frame.settings == {3: 7, 6: 8192, 1: 256, 4: 1 << 20, 8: 1}
    assert (update.stream_id, update.window_increment) == (0, 1 << 22)
    conn.receive_data(PREFACE + SettingsFrame(0).serialize() + POST_OPEN)
    assert conn.streams[1].recv_window == 65535  # before the ACK: the default
    events = conn.receive_data(SettingsFrame(0, flags=["ACK"]).serialize())
    assert [type(e) for e in events] == [ev.SettingsAcknowledged]
    assert conn.streams[1].recv_window == 1 << 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_any_bytes_give_events_or_a_connection_error(data, cut):
    conn = opened(POST_OPEN)
    try:
        conn.receive_data(data[:cut])
        conn.receive_data(data[cut:])
    except ev.H2ConnectionError:
        pass
