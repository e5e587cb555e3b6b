"""FUSE front end: an engine's data as one regular file (the ``device`` path)."""
from fuseblk.engine import BlockEngine
from fuseblk.file_engine import FileEngine
from fuseblk.mount import (invalidate_size, is_fuse_mount, replace_engine, serve, serving,
                           unmount)

__all__ = ["BlockEngine", "FileEngine", "serve", "unmount", "is_fuse_mount", "invalidate_size",
           "replace_engine", "serving"]
