"""Exceptions raised by lumenkit: each names the file, the problem and the fix."""

from __future__ import annotations


class LumenkitError(Exception):
    """Base class of every error lumenkit raises on bad input; the CLI prints it as one line."""


class DatasetNotFoundError(LumenkitError, FileNotFoundError):
    """A dataset folder, split or expected file is missing."""


class EmptySplitError(LumenkitError):
    """A split folder exists but holds no images."""


class MissingMaskError(LumenkitError, FileNotFoundError):
    """An image has no mask file beside it in the LumenStone layout."""


class BadImageError(LumenkitError, ValueError):
    """An image file is corrupt, truncated, not an image, too large, or of an unsupported kind."""


class BadMaskError(LumenkitError, ValueError):
    """A mask file is corrupt, multi-channel, not 8-bit, or of the wrong size."""


class MaskSizeError(BadMaskError):
    """A mask's size does not match its image's size."""


class UnknownClassError(LumenkitError, ValueError):
    """A class code, label or class-set name that lumenkit does not know or that the class set excludes."""


class ConfigError(LumenkitError, ValueError):
    """A configuration file (``dataset.yaml``, ``deposits.csv``, parameter YAML) is malformed."""


class CheckpointError(LumenkitError, ValueError):
    """A checkpoint file is missing, not a lumenkit checkpoint, or its weights do not fit its architecture."""


class OutputPathError(LumenkitError, OSError):
    """An output path cannot be written: a file where a folder is expected, a path under a file, a read-only folder.

    Attributes:
        reason: the operating system's words for the failure that caused it (``"No space left on device"``), or
            ``None``; for a caller that reports the failure under another name than the path written (a staging
            folder renamed into place).
    """

    reason: str | None = None

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
