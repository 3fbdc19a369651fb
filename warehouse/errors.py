"""Errors that users are meant to read.

Every expected failure derives from :class:`QEError`; the CLI prints ``Error: <message>`` in one line and
exits 1, and ``--debug`` shows the traceback. Messages name the file, row and rule where there is one.
"""

from __future__ import annotations


class QEError(Exception):
    """Base class of every error the CLI reports as one clear line."""


class LoadError(QEError):
    """A file could not be read at all; nothing from it was written.

    Parameters
    ----------
    path : str
        The file that failed.
    reason : str
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason} (nothing from this file was written)")


class WarehouseError(QEError):
    """The warehouse directory or one of its tables is unusable."""


class ConfigError(QEError):
    """A configuration value or command-line option is invalid."""


class WriteError(QEError):
    """Writing a warehouse file failed (full disk, permissions); what was being written is left as it was.

    Parameters
    ----------
    path : str
        The warehouse file that could not be written.
    reason : str
        The operating system's words for it, e.g. ``No space left on device``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"write failed: {self.path}: {reason}")


class MissingEvidenceError(QEError):
    """A roll rule has no evidence for some roots; their roll tables were left as they were.

    Parameters
    ----------
    message : str
        The one-line explanation (which roots, what to do).
    refused : list of str
        The roots that were not rebuilt.
    built : object
        What was built for the other roots (a ``pyarrow.Table`` of roll rows), so a caller can still show it.
    """

    def __init__(self, message: str, refused: list[str], built: object) -> None:
        self.refused = refused
        self.built = built
        super().__init__(message)
