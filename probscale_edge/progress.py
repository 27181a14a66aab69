"""Progress bars for long stages (tqdm on stderr; quiet when PROBSCALE_EDGE_QUIET=1
and on every rank but 0 under torchrun)."""

from __future__ import annotations

import contextlib
import os
import sys


class _Bar:
    def __init__(self, bar):
        self.bar = bar

    def update(self, n=1, **postfix):
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(n)


@contextlib.contextmanager
def progress_bar(total, desc):
    if os.environ.get("PROBSCALE_EDGE_QUIET") == "1" or os.environ.get("RANK", "0") != "0":
        yield _Bar(None)
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=1.0)
    try:
        yield _Bar(bar)
    finally:
        bar.close()
