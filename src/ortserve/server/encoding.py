"""Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`, as Triton's HTTP client sends them with
`request_compression_algorithm`), decompressed within the body size limit, so that a small compressed body cannot
grow past it."""

from __future__ import annotations

import zlib

_WINDOWS = {b"gzip": (16 + zlib.MAX_WBITS,), b"x-gzip": (16 + zlib.MAX_WBITS,),
            # HTTP's deflate is zlib's format; some clients send the raw stream
            b"deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS)}


class EncodingError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decoded_body(body: bytes, content_encoding: bytes, limit: int) -> bytes:
    """`body` with its content codings undone, last applied first; EncodingError (with the HTTP status to answer)
    for a coding this server does not know (415), a body that does not decode (400), or one that decodes past
    `limit` bytes (413)."""
    codings = [token.strip().lower() for token in content_encoding.split(b",")]
    for coding in reversed(codings):
        if coding in (b"", b"identity"):
            continue
        windows = _WINDOWS.get(coding)
        if windows is None:
            raise EncodingError(f"Content-Encoding {coding.decode('latin-1')!r} is not supported; send the body "
                                "as is, or with gzip or deflate", 415)
        body = _inflate(body, windows, coding.decode("latin-1"), limit)
    return body


def _inflate(body: bytes, windows: tuple[int, ...], coding: str, limit: int) -> bytes:
    error: zlib.error | None = None
    for window in windows:
        inflater = zlib.decompressobj(window)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(data) > limit:
            raise EncodingError(f"request body decompresses past the limit of {limit} bytes", 413)
        if not inflater.eof:
            raise EncodingError(f"request body is not whole {coding} data (it ends early)", 400)
        return data
    raise EncodingError(f"request body is not valid {coding} data: {error}", 400)
