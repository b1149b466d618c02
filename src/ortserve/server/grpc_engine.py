"""A unary gRPC server driven straight off grpcio's completion queue by one thread, not by grpc.aio.

Why: grpc.aio spends about 115 us of the event loop's CPU on every unary call (three asyncio tasks per call and a
poller thread that hands each completion over to the loop), which capped the MLP benchmark near 3,000 calls/s on
two cores however lean the handler. Here one thread polls the completion queue itself; inference calls go from
it straight to the model's batcher, and the thread that ran the batch sends the answers. A fast model's batch
runs on this thread once it has read every call already waiting (runtime.batcher), so a small model's calls
need no thread hand-over at all (docs/benchmarks.md, "MLP"). This drives grpcio's Cython layer
(`grpc._cython.cygrpc`) with the calls grpcio's own thread-pool server makes; grpcio is pinned exactly for that.

A servicer's methods come in two kinds, told apart by their signature:
- `def Method(self, request, call: Call) -> None` runs on the gRPC thread. It must not block: it answers through
  `call` now, or later from any thread (inference: from the batch worker).
- `async def Method(self, request) -> Response` runs on the event loop, for calls that touch the registry's
  state (load, unload) or are rare enough that a thread hop does not matter; `async def Method(self, request,
  call)` also gets the call (its metadata), and must answer only by returning or raising.
A core error raised by either becomes its status code (`grpc_status`); anything else is logged and INTERNAL.

A bidirectional-streaming method (Triton's ModelStreamInfer) is served by a unary one the servicer names in its
`streams` attribute, `{"StreamMethod": ("UnaryMethod", wrap)}`: each request read from the stream is handled as a
call of its own (`StreamItem`), and `wrap(response, error)` turns its answer or error into the stream's message.
Answers go out in the order they are ready, one send at a time; the stream ends OK once the client has half-closed
and every request read has been answered.

A server-streaming method (gRPC health's Watch) is served by the servicer's method of that name as
`def Method(self, request, feed: Feed) -> None`, on the gRPC thread: it sends messages through `feed` from any
thread, one at a time in order, and ends the call with a status, or leaves it open until the client goes (an
`on_end` callback learns when). Open feeds end UNAVAILABLE when the server stops.

Each call carries its deadline (`Call.deadline_ns`, on time.perf_counter_ns) and can learn when its client has
gone: a handler that leaves a callback with `on_cancel` (withdrawing a queued request: runtime.batcher) starts
the close-on-server operation, through which the core reports a cancelled call (the client cancelled, or its
deadline passed), and the callback runs then. Calls answered at once never ask: one operation and one
completion fewer per call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc._cython import cygrpc

from ortserve.server.grpc_status import status_of
from ortserve.server.listener import ListenError

log = logging.getLogger(__name__)

Result = TypeVar("Result")
Handler = Callable[[Message, "Call"], None]

_LEAST_PING_INTERVAL_MS = 10_000
_IDLE_CONNECTION_MS = 300_000
_NEW_CALL = object()  # tag of grpc_server_request_call
_SHUTDOWN = object()  # tag of grpc_server_shutdown_and_notify
_NO_WAIT = 0.0  # a poll deadline already past: return at once
_OUTSTANDING_REQUESTS = 16  # calls the core may hand over per poll without waiting for us to ask again
_MOST_EVENTS_BEFORE_RUNNING = 64  # bounds how long requests read first wait for those read after them
_MOST_PENDING_CALLS = 256
_NO_DEADLINE_S = 10 * 365 * 86400.0  # grpcio reports "no deadline" as a time far in the future
ROUTING_KEY = "x-routing-key"  # metadata that keeps a caller on one version of a traffic split


@dataclass(frozen=True, slots=True)
class Method:
    request_type: type[Message]
    handle: Handler


class _Answering:
    """What a handler uses of a call, whether unary or one request of a stream: its metadata, and answering with a
    response (`reply`) or an error (`fail`, through `abort`)."""

    __slots__ = ()
    metadata: Sequence[tuple[str, str | bytes]]
    name: str

    def metadata_value(self, key: str) -> str | None:
        return metadata_value(self.metadata, key)

    def reply(self, response: Message) -> None:
        raise NotImplementedError

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        code, details = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.error("unhandled error in %s", self.name, exc_info=error)
        self.abort(code, details)

    def answer_with(self, build: Callable[[Result], Message]) -> Callable[[Result | BaseException], None]:
        return answer_with(self, build)


class Call(_Answering):
    """One unary call. Answer it once, from any thread; later answers are ignored."""

    __slots__ = ("_answered", "_call", "_closing", "_lock", "_on_cancel", "deadline_ns", "metadata", "name",
                 "run_later")

    def __init__(self, call: cygrpc.Call, name: str, run_later: Callable[[Callable[[], None]], None],
                 deadline_ns: int, metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        self._call = call
        self.name = name
        self.metadata = metadata  # the client's invocation metadata, keys lower-case
        self.run_later = run_later  # work for the gRPC thread once it has read the calls already waiting
        self.deadline_ns = deadline_ns  # when the client stops waiting (time.perf_counter_ns); 0: never
        self._answered = False
        self._closing = False  # the close-on-server operation is started
        self._on_cancel: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def peer_host(self) -> str | None:
        """The client's address without its port ("ipv4:127.0.0.1:5555" gives 127.0.0.1, "ipv6:[::1]:5555" ::1);
        None where the transport has none (a unix socket)."""
        peer = self._call.peer()
        text = unquote(peer.decode() if isinstance(peer, bytes) else peer)
        kind, _, address = text.partition(":")
        if kind == "ipv4":
            return address.rpartition(":")[0]
        if kind == "ipv6":
            return address.rpartition(":")[0].strip("[]")
        return None

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` (on the gRPC thread) if the client goes away before the call is answered."""
        with self._lock:
            if self._answered:
                return
            self._on_cancel, self._closing = callback, True
        try:
            self._call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), _Closing(self))
        except ValueError:  # the call is already over
            self.cancelled()

    def cancelled(self) -> None:
        """The core reports that the client cancelled, or that the deadline passed: nothing more is sent (the
        client reports its own DEADLINE_EXCEEDED or CANCELLED)."""
        with self._lock:
            self._answered = True
        callback, self._on_cancel = self._on_cancel, None
        if callback is not None:
            callback()

    def reply(self, response: Message) -> None:
        self._finish(response.SerializeToString(), grpc.StatusCode.OK, "")

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._finish(None, code, details)

    def _finish(self, message: bytes | None, code: grpc.StatusCode, details: str) -> None:
        with self._lock:
            if self._answered:
                return
            self._answered = True
            closing = self._closing
            # The cancel callback holds the queued request, whose answer callback holds this call: a cycle that
            # only the cyclic garbage collector frees, and the core counts a call's stream as allocated until the
            # call is freed. Past max_concurrent_streams such streams, it refuses new ones (REFUSED_STREAM).
            self._on_cancel = None
        operations = [cygrpc.SendInitialMetadataOperation(None, 0)]
        if message is not None:
            operations.append(cygrpc.SendMessageOperation(message, 0))
        operations.append(cygrpc.SendStatusFromServerOperation(None, code.value[0], details.encode(), 0))
        if not closing:
            operations.append(cygrpc.ReceiveCloseOnServerOperation(0))
        try:
            # the tag keeps this object, so the core's call, alive until the send completes
            self._call.start_server_batch(operations, self)
        except ValueError:  # the call is already over (cancelled, or its deadline passed)
            log.debug("could not answer %s: the call has ended", self.name)


def metadata_value(metadata: Sequence[tuple[str, str | bytes]], key: str) -> str | None:
    """The first text value of a metadata key (lower-case), or None."""
    for name, value in metadata:
        if name == key:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


class Answerable(Protocol):
    def reply(self, response: Message) -> None: ...

    def fail(self, error: BaseException) -> None: ...


def answer_with(call: Answerable, build: Callable[[Result], Message]) -> Callable[[Result | BaseException], None]:
    """A callback that replies to `call` with `build(result)`, or fails it with the error it is given (or that
    build raises)."""

    def answer(result: Result | BaseException) -> None:
        if isinstance(result, BaseException):
            call.fail(result)
            return
        try:
            response = build(result)
        except Exception as exc:
            call.fail(exc)
            return
        call.reply(response)

    return answer


Wrap = Callable[[Message | None, str], Message]  # an answer, or an error's message, as the stream's message


@dataclass(frozen=True, slots=True)
class StreamMethod:
    request_type: type[Message]
    handle: Handler  # the unary method that answers each request of the stream
    wrap: Wrap


class StreamItem(_Answering):
    """One request read from a stream, handled as a unary call is: answered once, from any thread, as a message on
    its stream."""

    __slots__ = ("_answered", "_stream", "deadline_ns", "metadata", "name", "run_later")

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.name, self.metadata, self.deadline_ns = stream.name, stream.metadata, stream.deadline_ns
        self.run_later = stream.run_later
        self._answered = False

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` if the stream is cancelled before this request is answered."""
        self._stream.on_cancel(self, callback)

    def reply(self, response: Message) -> None:
        self._settle(response, "")

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._settle(None, details)

    def _settle(self, response: Message | None, error: str) -> None:
        if self._answered:
            return
        self._answered = True
        self._stream.answered(self, response, error)


class _Outbox:
    """The sending half of a streaming call: messages in order, one batch in flight at a time (the initial
    metadata with the first), then the status once every message before it is sent. Its owner calls it under
    the lock it shares with it; the completion of each send takes that lock."""

    def __init__(self, call: cygrpc.Call, lock: threading.Lock) -> None:
        self._call = call
        self._lock = lock
        self._messages: deque[bytes] = deque()
        self._status: tuple[grpc.StatusCode, str] | None = None
        self._sending = False
        self._metadata_sent = False
        self.over = False  # the status is sent, or a send failed, or the call was cancelled
        self._sent = _StreamEvent(self._was_sent)

    @property
    def ending(self) -> bool:
        """No more messages are taken: the status is set or sent, or the call is over."""
        return self.over or self._status is not None

    def push(self, data: bytes) -> None:
        if self.ending:
            return
        self._messages.append(data)
        self._send_next()

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        if self.ending:
            return
        self._status = (code, details)
        self._send_next()

    def _was_sent(self, event: Any) -> None:
        with self._lock:
            self._sending = False
            if not event.success:
                self.over = True
                return
            self._send_next()

    def _send_next(self) -> None:
        if self._sending or self.over:
            return
        if self._messages:
            operations: list[Any] = [cygrpc.SendMessageOperation(self._messages.popleft(), 0)]
        elif self._status is not None:
            code, details = self._status
            operations = [cygrpc.SendStatusFromServerOperation(None, code.value[0], details.encode(), 0)]
            self.over = True
        else:
            return
        if not self._metadata_sent:
            operations.insert(0, cygrpc.SendInitialMetadataOperation(None, 0))
            self._metadata_sent = True
        try:
            self._call.start_server_batch(operations, self._sent)
            self._sending = True
        except ValueError:  # the call is already over
            self.over = True


class Stream:
    """A bidirectional-streaming call: requests read one at a time, each handled as a StreamItem; answers sent one
    at a time, in the order they are ready."""

    def __init__(self, call: cygrpc.Call, name: str, run_later: Callable[[Callable[[], None]], None],
                 deadline_ns: int, metadata: Sequence[tuple[str, str | bytes]], method: StreamMethod) -> None:
        self._call = call
        self.name, self.run_later, self.deadline_ns, self.metadata = name, run_later, deadline_ns, metadata
        self._method = method
        self._lock = threading.Lock()
        self._outbox = _Outbox(call, self._lock)
        self._half_closed = False  # the client sent its last request
        self._unanswered: dict[StreamItem, Callable[[], None] | None] = {}
        # the tags keep this object, so the core's call, alive while an operation is in flight
        self._receiving, self._closed = _StreamEvent(self._received), _StreamEvent(self._was_closed)

    def start(self) -> None:
        try:
            self._call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), self._closed)
            self._call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._receiving)
        except ValueError:
            log.debug("stream %s ended before its first request was read", self.name)

    def on_cancel(self, item: StreamItem, callback: Callable[[], None]) -> None:
        with self._lock:
            if item in self._unanswered:
                self._unanswered[item] = callback
                return
            cancelled = self._outbox.over
        if cancelled:
            callback()

    def answered(self, item: StreamItem, response: Message | None, error: str) -> None:
        data = self._method.wrap(response, error).SerializeToString()
        with self._lock:
            self._unanswered.pop(item, None)
            self._outbox.push(data)
            self._finish_if_done()

    def _received(self, event: Any) -> None:
        if not event.success:  # the call ended (cancelled, deadline passed)
            return
        data = event.batch_operations[0].message()
        if data is None:  # the client's last request has come
            with self._lock:
                self._half_closed = True
                self._finish_if_done()
            return
        item = StreamItem(self)
        with self._lock:
            self._unanswered[item] = None
        _handle_message(item, self._method.request_type, self._method.handle, data)
        try:
            self._call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._receiving)
        except ValueError:
            log.debug("stream %s ended while reading", self.name)

    def _was_closed(self, event: Any) -> None:
        if not event.batch_operations[0].cancelled():
            return
        with self._lock:
            self._outbox.over = True
            callbacks = [callback for callback in self._unanswered.values() if callback is not None]
            self._unanswered.clear()
        for callback in callbacks:
            callback()

    def _finish_if_done(self) -> None:
        """Under the lock: the OK status, once the client has half-closed and every request is answered."""
        if self._half_closed and not self._unanswered:
            self._outbox.finish(grpc.StatusCode.OK, "")


FeedHandler = Callable[[Message, "Feed"], None]


@dataclass(frozen=True, slots=True)
class FeedMethod:
    request_type: type[Message]
    handle: FeedHandler


class Feed:
    """A server-streaming call: one request, then the messages its handler sends, from any thread, until the
    handler ends it with a status or the client goes away. Sent one at a time, in order; `on_end` callbacks run
    once the call is over either way (on the gRPC thread)."""

    def __init__(self, call: cygrpc.Call, name: str, metadata: Sequence[tuple[str, str | bytes]],
                 method: FeedMethod, on_over: Callable[[Feed], None]) -> None:
        self._call = call
        self.name, self.metadata = name, metadata
        self._method = method
        self._on_over = on_over
        self._lock = threading.Lock()
        self._outbox = _Outbox(call, self._lock)
        self._ended = False  # the on_end callbacks have run
        self._on_end: list[Callable[[], None]] = []
        self._receiving, self._closed = _StreamEvent(self._received), _StreamEvent(self._was_closed)

    def start(self) -> None:
        try:
            self._call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), self._closed)
            self._call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._receiving)
        except ValueError:
            log.debug("call %s ended before its request was read", self.name)
            self._end_callbacks()

    def send(self, message: Message) -> None:
        data = message.SerializeToString()
        with self._lock:
            self._outbox.push(data)

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """Send the status after the messages already sent; later sends are dropped."""
        with self._lock:
            self._outbox.finish(code, details)

    def fail(self, error: BaseException) -> None:
        code, details = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.error("unhandled error in %s", self.name, exc_info=error)
        self.end(code, details)

    def on_end(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._ended:
                self._on_end.append(callback)
                return
        callback()

    def _received(self, event: Any) -> None:
        if not event.success:  # the call ended before its request arrived
            return
        data = event.batch_operations[0].message()
        if data is None:
            self.end(grpc.StatusCode.INVALID_ARGUMENT, f"{self.name}: no request message")
            return
        try:
            request = self._method.request_type.FromString(data)
        except DecodeError as exc:
            self.end(grpc.StatusCode.INVALID_ARGUMENT, f"{self.name}: the request is not a valid "
                     f"{self._method.request_type.DESCRIPTOR.full_name}: {exc}")
            return
        try:
            self._method.handle(request, self)
        except Exception as exc:  # the handler's errors are the caller's status (grpc_status maps them)
            self.fail(exc)

    def _was_closed(self, event: Any) -> None:
        """The call is over: the status was sent, or the client cancelled (its deadline passed)."""
        with self._lock:
            self._outbox.over = True
        self._end_callbacks()

    def _end_callbacks(self) -> None:
        with self._lock:
            self._ended = True
            callbacks, self._on_end = self._on_end, []
        self._on_over(self)
        for callback in callbacks:
            callback()


class _StreamEvent:
    """Tag of a stream's operation: what to do when it completes (on the gRPC thread)."""

    __slots__ = ("completed",)

    def __init__(self, completed: Callable[[Any], None]) -> None:
        self.completed = completed


class _Closing:
    """Tag of the close-on-server operation: it completes when the call ends, cancelled or not."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call


class _Receiving:
    """Tag of the batch that reads a call's one request message."""

    __slots__ = ("call", "method")

    def __init__(self, call: Call, method: Method) -> None:
        self.call = call
        self.method = method


class GrpcServer:
    def __init__(self, address: str, *, max_message_bytes: int, max_streams: int = 100) -> None:
        self._address = address
        self._queue = cygrpc.CompletionQueue()
        self._server = cygrpc.Server((
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            # hostile or broken clients: calls per connection, pings (a client pinging more often than every
            # 10 s without calls gets GOAWAY after two strikes), connections idle for 5 minutes closed
            ("grpc.max_concurrent_streams", max_streams),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", _LEAST_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_connection_idle_ms", _IDLE_CONNECTION_MS),
            # Calls the gRPC thread has not taken yet wait in the core; past these counts the core refuses new ones
            # at once (CANCELLED), with no Python work. ONNX Runtime models queue in their batcher, where
            # admission refuses what cannot be served in time; this bounds the queue in front of the thread itself
            # when it is the bottleneck (a small model under overload: docs/benchmarks.md).
            ("grpc.server.max_pending_requests", _MOST_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", 2 * _MOST_PENDING_CALLS),
        ), False)
        self._server.register_completion_queue(self._queue)
        self._methods: dict[bytes, Method] = {}
        self._streams: dict[bytes, StreamMethod] = {}
        self._feeds: dict[bytes, FeedMethod] = {}
        self._open_feeds: set[Feed] = set()
        self._stopping = False
        self._later: list[Callable[[], None]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ortserve-grpc", daemon=True)

    def add_service(self, service: ServiceDescriptor, servicer: object, loop: asyncio.AbstractEventLoop) -> None:
        """Route each method of `service` to the servicer's method of the same name: a server-streaming one as a
        Feed, a bidirectional one named in the servicer's `streams`; client-streaming methods and those the
        servicer lacks answer UNIMPLEMENTED."""
        streams: dict[str, tuple[str, Wrap]] = getattr(servicer, "streams", {})
        for descriptor in service.methods:
            path = f"/{service.full_name}/{descriptor.name}".encode()
            request_type = message_factory.GetMessageClass(descriptor.input_type)
            if descriptor.client_streaming and descriptor.server_streaming and descriptor.name in streams:
                unary, wrap = streams[descriptor.name]
                self._streams[path] = StreamMethod(request_type, getattr(servicer, unary), wrap)
                continue
            implementation = getattr(servicer, descriptor.name, None)
            if implementation is not None and descriptor.server_streaming and not descriptor.client_streaming:
                self._feeds[path] = FeedMethod(request_type, implementation)
                continue
            if implementation is None or descriptor.client_streaming or descriptor.server_streaming:
                continue
            handle = (_on_loop(implementation, loop, len(inspect.signature(implementation).parameters) == 2)
                      if inspect.iscoroutinefunction(implementation) else implementation)
            self._methods[path] = Method(request_type, handle)

    def start(self) -> int:
        """Listen and start the gRPC thread; the bound port."""
        port = self._server.add_http2_port(self._address.encode())
        if port == 0:
            raise ListenError(f"cannot listen for gRPC on {self._address} (taken, or not an address of this host)")
        self._server.start()
        for _ in range(_OUTSTANDING_REQUESTS):
            self._server.request_call(self._queue, self._queue, _NEW_CALL)
        self._thread.start()
        return int(port)

    def stop(self, grace_s: float) -> None:
        """Refuse new calls, give running ones `grace_s` to finish, cancel the rest, end the gRPC thread, and free
        the core's server."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        for feed in list(self._open_feeds):  # they would run to the end of the grace period
            feed.end(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        self._server.shutdown(self._queue, _SHUTDOWN)
        if not self._stopped.wait(grace_s):
            self._server.cancel_all_calls()
            self._stopped.wait()
        self._thread.join()
        # Destroyed here, not by the gRPC thread on seeing the shutdown tag: the core may publish that tag before
        # shutdown() has returned, and destroying the server under it crashed the process (SIGSEGV, about one stop
        # in sixty after traffic).
        self._server.destroy()

    def _serve(self) -> None:
        while True:
            if not self._dispatch(self._queue.poll()):
                return
            # Read every call already waiting before running what handlers left for later: fast models' requests
            # then batch up on this thread, with no hand-over to a worker thread (runtime.batcher).
            for _ in range(_MOST_EVENTS_BEFORE_RUNNING):
                event = self._queue.poll(_NO_WAIT)
                if event.completion_type == cygrpc.CompletionType.queue_timeout:
                    break
                if not self._dispatch(event):
                    return
            while self._later:
                work = self._later.pop(0)
                try:
                    work()
                except Exception:  # the gRPC thread must survive whatever a batch does
                    log.exception("running a batch on the gRPC thread failed")

    def _dispatch(self, event: Any) -> bool:
        """Act on one completion; False once the server has shut down."""
        tag = event.tag
        if isinstance(tag, _Receiving):
            _handle(tag, event)
        elif isinstance(tag, _StreamEvent):
            tag.completed(event)
        elif isinstance(tag, _Closing):
            if event.batch_operations[0].cancelled():
                tag.call.cancelled()
        elif tag is _NEW_CALL:
            if event.success:
                self._accept(event.call, event.call_details.method, event.call_details.deadline,
                             event.invocation_metadata)
            if not self._stopping:
                self._server.request_call(self._queue, self._queue, _NEW_CALL)
        elif tag is _SHUTDOWN:
            self._stopped.set()
            return False
        return True

    def _run_later(self, work: Callable[[], None]) -> None:
        self._later.append(work)

    def _accept(self, call: cygrpc.Call, path: bytes, deadline_s: float,
                metadata: Sequence[tuple[str, str | bytes]]) -> None:
        name = path.decode(errors="replace")
        left_s = deadline_s - time.time()
        deadline_ns = 0 if left_s > _NO_DEADLINE_S else time.perf_counter_ns() + int(left_s * 1e9)
        feed = self._feeds.get(path)
        if feed is not None:
            opened = Feed(call, name, metadata, feed, self._open_feeds.discard)
            self._open_feeds.add(opened)
            opened.start()
            return
        stream = self._streams.get(path)
        if stream is not None:
            Stream(call, name, self._run_later, deadline_ns, metadata, stream).start()
            return
        answer = Call(call, name, self._run_later, deadline_ns, metadata)
        method = self._methods.get(path)
        if method is None:
            answer.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {name} is not implemented by ortserve")
            return
        try:
            call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), _Receiving(answer, method))
        except ValueError:
            log.debug("call %s ended before its request was read", name)


def _handle(receiving: _Receiving, event: Any) -> None:
    call, method = receiving.call, receiving.method
    if not event.success:  # the call ended (cancelled, deadline passed) before its request arrived
        return
    data = event.batch_operations[0].message()
    if data is None:  # the client half-closed without a message
        call.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{call.name}: no request message")
        return
    _handle_message(call, method.request_type, method.handle, data)


def _handle_message(target: _Answering, request_type: type[Message], handle: Handler, data: bytes) -> None:
    """Decode one request message and hand it to its handler; what either raises becomes `target`'s error."""
    try:
        request = request_type.FromString(data)
    except DecodeError as exc:
        target.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{target.name}: a request is not a valid "
                     f"{request_type.DESCRIPTOR.full_name}: {exc}")
        return
    try:
        handle(request, target)  # type: ignore[arg-type]  # a stream's item answers as a call does
    except Exception as exc:  # the handler's errors are the caller's answer (grpc_status maps them)
        target.fail(exc)


def _on_loop(coroutine: Callable[..., Awaitable[Message]], loop: asyncio.AbstractEventLoop, with_call: bool
             ) -> Handler:
    def handle(request: Message, call: Call) -> None:
        running = coroutine(request, call) if with_call else coroutine(request)
        future = asyncio.run_coroutine_threadsafe(running, loop)  # type: ignore[arg-type]
        future.add_done_callback(lambda done: _settle(call, done))

    return handle


def _settle(call: Call, done: concurrent.futures.Future[Message]) -> None:
    if done.cancelled():
        call.abort(grpc.StatusCode.CANCELLED, f"{call.name} was cancelled: the server is stopping")
    elif (error := done.exception()) is not None:
        call.fail(error)
    else:
        call.reply(done.result())
