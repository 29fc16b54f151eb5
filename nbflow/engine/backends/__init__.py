"""Where task functions execute.  Every backend speaks :class:`~.base.Backend`."""

from ...core.sizes import cheap_size
from .base import Backend
from .local import AsyncBackend, ThreadBackend

__all__ = ["AsyncBackend", "Backend", "ThreadBackend", "cheap_size"]
