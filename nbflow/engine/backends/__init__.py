"""Where task functions execute.  Every backend speaks :class:`~.base.Backend`."""

from .base import Backend, cheap_size
from .local import AsyncBackend, ThreadBackend

__all__ = ["AsyncBackend", "Backend", "ThreadBackend", "cheap_size"]
