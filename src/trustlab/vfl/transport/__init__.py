"""Transports carry the same protocol bytes in-process or over mutual-TLS gRPC."""

from .base import Transport, remote_error

__all__ = ["Transport", "remote_error"]
