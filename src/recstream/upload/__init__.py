"""Uploading finished recordings from the local spool to the archive store (issue 18).

:mod:`.spool` finds the recordings waiting, :mod:`.put` puts one file with the
temporary-name / verify / commit protocol, :mod:`.uploader` runs the retries in a
background thread.  Store URLs and credentials are :mod:`recstream.storage`'s.
"""

from recstream.upload.put import PutResult, put_verified
from recstream.upload.spool import SpoolItem, scan
from recstream.upload.uploader import (
    DEFAULT_MIN_FREE_BYTES,
    RetryPolicy,
    Uploader,
    UploadStatistics,
    spool_status,
)

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "PutResult",
    "RetryPolicy",
    "SpoolItem",
    "UploadStatistics",
    "Uploader",
    "put_verified",
    "scan",
    "spool_status",
]
