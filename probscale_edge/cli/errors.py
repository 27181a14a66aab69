"""File-system errors as one line naming the path (no traceback)."""

from __future__ import annotations

import errno

from probscale_edge.errors import ProbscaleError

_FIXES = {errno.ENOSPC: "free disk space or pass another --output / PROBSCALE_EDGE_CACHE location",
          errno.EDQUOT: "free disk space or pass another --output location",
          errno.EROFS: "pass an --output on a writable file system",
          errno.EACCES: "pass an --output you can write to",
          errno.EPERM: "pass an --output you can write to",
          errno.EEXIST: "remove it or pass another path",
          errno.ENOTDIR: "a part of the path is a file: pass a path under folders",
          errno.EISDIR: "pass a file path, not a folder",
          errno.ENOENT: "check the path exists",
          errno.ENAMETOOLONG: "pass a shorter path",
          errno.ELOOP: "the path loops through symbolic links: pass a real path",
          errno.EMFILE: "close other programs or raise the open-file limit (ulimit -n)",
          errno.EIO: "check the disk"}


def os_error(e: OSError) -> ProbscaleError:
    where = e.filename or "while reading or writing"
    if e.filename2:
        where = f"{e.filename} -> {e.filename2}"
    fix = _FIXES.get(e.errno, "check the path and its permissions")
    from probscale_edge.assets import cache_dir

    if e.filename and str(cache_dir()) in str(e.filename):
        fix = "point PROBSCALE_EDGE_CACHE at a writable folder with free space"
    return ProbscaleError(f"{e.strerror or type(e).__name__} ({where}); no partial output was kept", fix)


def is_disk_full(e: BaseException) -> bool:
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text:
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False
