"""The two sockets between the supervisor and one worker.

Owns the control channel (``ControlChannel``: length-prefixed pickled messages
over a SOCK_STREAM socketpair, strict request/reply, one request at a time
under a lock, usable from any thread of the supervisor; ``ask_all`` sends one
request to several channels before it collects the replies) and the connection
hand-off (``send_connection`` / ``receive_connections``: one accepted socket
per SOCK_SEQPACKET message, with a one-byte tag saying which server it is for).
Both ends are our own processes, so pickle is safe here.  It decides nothing.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading

_LENGTH = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024

# hand-off tags: which of the worker's servers a connection is for
NFS_TAG = b"n"
MOUNT_TAG = b"m"


class ChannelClosed(ConnectionError):
    """The other end went away (the worker died, or the supervisor did)."""


def send_message(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ChannelClosed("control channel closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive_message(sock: socket.socket) -> object:
    (length,) = _LENGTH.unpack(_receive_exactly(sock, _LENGTH.size))
    if length > MAX_MESSAGE:
        raise ChannelClosed(f"control message of {length} bytes: the other end is confused")
    return pickle.loads(_receive_exactly(sock, length))


class ControlChannel:
    """The supervisor's end: ``request`` sends a message and waits for the reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def request(self, message: dict, timeout: float) -> object:
        with self.lock:
            return self.request_locked(message, timeout)

    def request_locked(self, message: dict, timeout: float) -> object:
        """``request`` for a caller that holds ``lock`` already."""
        self.send(message, timeout)
        return self.receive(message, timeout)

    def send(self, message: dict, timeout: float) -> None:
        """First half of a request (caller holds ``lock``): several workers can then work at once."""
        try:
            self.sock.settimeout(timeout)
            send_message(self.sock, message)
        except OSError as exc:
            self.close()
            raise ChannelClosed(f"cannot send {message.get('op')!r}: {exc}") from exc

    def receive(self, message: dict, timeout: float) -> object:
        """Second half: the reply to ``message`` (caller holds ``lock``)."""
        try:
            self.sock.settimeout(timeout)
            reply = receive_message(self.sock)
        except OSError as exc:  # socket.timeout included
            # a late reply would answer the next request: this channel is unusable now
            self.close()
            raise ChannelClosed(f"no answer to {message.get('op')!r}: {exc}") from exc
        if isinstance(reply, dict) and reply.get("error"):
            raise RuntimeError(f"worker failed {message.get('op')!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def send_connection(handoff: socket.socket, tag: bytes, sock: socket.socket) -> None:
    """Pass an accepted socket to the worker (raises OSError if it cannot take it now)."""
    socket.send_fds(handoff, [tag], [sock.fileno()])


def receive_connections(handoff: socket.socket) -> list[tuple[bytes, socket.socket]] | None:
    """Sockets waiting on the hand-off channel ([] if none now, None at EOF)."""
    received = []
    while True:
        try:
            tag, fds, _flags, _addr = socket.recv_fds(handoff, 16, 4)
        except (BlockingIOError, InterruptedError):
            return received
        if not tag and not fds:
            return None if not received else received
        for fd in fds:
            received.append((tag, socket.socket(fileno=fd)))


def ask_all(channels: list[ControlChannel], message: dict, timeout: float) -> list[object]:
    """Send ``message`` on every channel, then collect every reply (or the exception instead):
    the workers handle it at the same time.  Locks are taken in list order: callers pass the
    channels in one fixed order, so two ``ask_all`` never wait for each other in a circle."""
    results: list[object] = [None] * len(channels)
    sent = []
    try:
        for position, channel in enumerate(channels):
            channel.lock.acquire()
            sent.append(position)
            try:
                channel.send(message, timeout)
            except ChannelClosed as exc:
                results[position] = exc
        for position in sent:
            if results[position] is None:
                try:
                    results[position] = channels[position].receive(message, timeout)
                except (ChannelClosed, RuntimeError) as exc:
                    results[position] = exc
    finally:
        for position in sent:
            channels[position].lock.release()
    return results
