"""Errors that are the user's to fix, not the code's: a wrong file, bad data, a download that cannot happen.

    UserError          the mark: its message names the file (or option) at fault and says what to do
    DataError          malformed annotations (JSON, XML), an unknown class, an empty or too small dataset
    CheckpointError    a file that is not a retinanet_lab checkpoint
    DownloadError      something to download could not be (offline?); the message says where to put it by hand
    ImageLoadError     (in retinanet_lab.data.images) an image file that cannot be read

`retinanet-lab` prints such an error in one or two lines and exits with status 2; so it does for the
built-in FileNotFoundError and the other path errors in `PATH_ERRORS`. Anything else is a bug and
keeps its traceback. Each class also derives from the built-in type raised before it existed
(ValueError, RuntimeError), so `except ValueError:` in older code still catches them.

This module imports nothing, so that the command line can catch these errors without loading PyTorch.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError", "CheckpointError", "DownloadError", "PATH_ERRORS"]


class UserError(Exception):
    """A problem with what the user gave (a file, a folder, data, an option, the network), not a bug."""


class DataError(UserError, ValueError):
    """Data that cannot be used as it is: malformed annotations, an unknown class, an empty dataset."""


class CheckpointError(UserError, ValueError):
    """A file that is not a retinanet_lab checkpoint (or not one this version can read)."""


class DownloadError(UserError, RuntimeError):
    """A file could not be downloaded (offline?); the message says what to fetch and where to put it."""


# OSErrors that are about a path the user gave: missing, a folder where a file belongs (or the reverse),
# no permission, already there. Their message names the path.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
