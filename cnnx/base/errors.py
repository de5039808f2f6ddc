"""The one exception type for errors a user can cause, and how any known failure reads as one line."""

from __future__ import annotations

# Exit codes of the cnnx command, as the README lists them.
RUNTIME_FAILURE, BAD_INPUT, INTERRUPTED = 1, 2, 130


class CnnxError(ValueError):
    """A bad file, spec or name: the message is fit to print as it is."""


class Cancelled(CnnxError):
    """A run given up between two stages because a newer request replaced it (``cnnx serve``)."""


def is_known(error: BaseException) -> bool:
    """A failure the user can cause or meet (bad input, a full disk, too little memory), as opposed to a bug."""
    return isinstance(error, (CnnxError, OSError, MemoryError))


def message(error: BaseException) -> str:
    """A known failure as one line: a CnnxError as it is, an OSError as ``FILE: what went wrong``."""
    if isinstance(error, MemoryError):
        return "out of memory; try a smaller image or pipeline (--max-memory refuses such runs before they start)"
    if isinstance(error, OSError) and not isinstance(error, CnnxError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    return str(error)


def exit_code(error: BaseException) -> int:
    """2 for bad input, 1 for a failure while running (such as a full disk)."""
    return BAD_INPUT if isinstance(error, CnnxError) else RUNTIME_FAILURE


def about(image, error: BaseException) -> str:
    """A failure's one line, naming the image it happened to (unless the message names it already)."""
    text = message(error)
    return text if text.startswith(str(image)) else f"{image}: {text}"


def printable(text: str, *, keep: str = "") -> str:
    """``text`` safe to show on a terminal or a page: control characters (ESC, BEL, CR, ...) and the marks that
    reorder text written as escapes, never sent raw; those in ``keep`` (a message's own line breaks) stay."""
    return "".join(_escape(c) if _hidden(c) and c not in keep else c for c in str(text))


def _hidden(char: str) -> bool:
    import unicodedata

    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char not in ("\u200d",)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
