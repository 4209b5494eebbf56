"""Ctrl-C that cannot be lost between units of work.

Python turns SIGINT into a KeyboardInterrupt at the next bytecode of the main thread. A C
extension that polls for signals inside a long call (Rust extensions through pyo3, such as
the tokenizers) can consume that pending interrupt and carry on, so a Ctrl-C landing there was
lost: the run finished and exited 0, and `llm-teach eval ... && next-step` went on. `install()`
keeps the default behaviour and also records the request; `check()`, called where work is
safe to stop (after each unit of work, each training step), raises it again if it was eaten.
"""

from __future__ import annotations

import signal
import threading

_requested = False


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT as Python does, remembering that it came (main thread only: signals
    cannot be installed from others)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (whether or not someone swallowed it)."""
    if _requested:
        raise KeyboardInterrupt
