"""Read-only memory maps of tar shards, at most ``max_bytes`` of them open: least recently used closed first.

A page read through a map counts toward the process's resident memory (``RssFile`` in
/proc/self/status) for as long as the map stays open, so keeping every shard mapped makes a
streamed epoch's RSS grow to the size of the store. With a bound, a shard's pages leave the
process when its map closes (they stay in the kernel's page cache, which reclaims them on its
own); reading that shard again maps it again, one system call.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from pathlib import Path


class ShardMaps:
    """Maps of shard files, keyed by path; ``max_bytes`` None: every map stays open.

    Opening a map that would take the mapped bytes past ``max_bytes`` first closes the least recently
    read ones; the map being read always stays, so a shard larger than the bound is still read.
    One instance may serve several splits (they share the bound) and several threads.
    """

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"the bound on mapped shard bytes must be at least 1 byte, got {max_bytes}")
        self.max_bytes = max_bytes
        self.maps: OrderedDict[Path, mmap.mmap] = OrderedDict()  # least recently read first
        self.mapped_bytes = 0
        self.opened = 0  # maps opened so far, re-opened ones included: what the bound costs in system calls
        self._lock = threading.Lock()

    def read(self, path: Path, offset: int, size: int) -> bytes:
        """``size`` bytes of the shard at ``path`` from ``offset``."""
        with self._lock:  # copied under the lock: no other thread closes this map mid-copy
            return self._open(path)[offset:offset + size]

    def close(self) -> None:
        with self._lock:
            while self.maps:
                self._close_oldest()

    def _open(self, path: Path) -> mmap.mmap:
        if path in self.maps:
            self.maps.move_to_end(path)
            return self.maps[path]
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while self.maps and self.max_bytes is not None and self.mapped_bytes + size > self.max_bytes:
                self._close_oldest()
            self.maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.mapped_bytes, self.opened = self.mapped_bytes + size, self.opened + 1
        return self.maps[path]

    def _close_oldest(self) -> None:
        _, oldest = self.maps.popitem(last=False)
        self.mapped_bytes -= len(oldest)
        oldest.close()
