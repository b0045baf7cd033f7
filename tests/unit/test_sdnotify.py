"""sd_notify messages sent to a real AF_UNIX datagram socket the test owns."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid

import pytest

from l4lb.sdnotify import Notifier, notify_message


@pytest.fixture
def receiver():
    """A datagram socket at a short path (sun_path holds 108 bytes; tmp_path can be longer)."""
    folder = tempfile.mkdtemp(prefix="l4lb-")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def fields(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def test_message_is_key_value_lines_and_a_newline_cannot_add_a_field():
    assert notify_message(READY=1, STATUS="ok") == b"READY=1\nSTATUS=ok"
    assert notify_message(STATUS="bad\nREADY=1") == b"STATUS=bad READY=1"


def test_no_notify_socket_means_no_notifier():
    assert Notifier.from_environ({}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/run/x"}).socket_name == "/run/x"


def test_ready_reloading_stopping_reach_a_path_socket(receiver):
    path, sock = receiver
    notifier = Notifier(path)
    assert notifier.ready("serving 1 listener(s)")
    assert fields(sock.recv(4096)) == {"READY": "1", "STATUS": "serving 1 listener(s)"}
    assert notifier.reloading(123456789)
    assert fields(sock.recv(4096)) == {
        "RELOADING": "1",
        "MONOTONIC_USEC": "123456789",
        "STATUS": "reloading",
    }
    assert notifier.stopping()
    assert fields(sock.recv(4096))["STOPPING"] == "1"


def test_abstract_namespace_name():
    name = f"l4lb-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier(f"@{name}").ready("up")
        assert fields(sock.recv(4096))["READY"] == "1"


def test_unreachable_socket_warns_once_and_never_raises(caplog, tmp_path):
    notifier = Notifier(str(tmp_path / "nobody"))
    assert not notifier.ready("x")
    assert not notifier.stopping()
    warnings = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(warnings) == 1
