"""The usage ledger's crash spool: append-only segment files on local disk.

Every usage row is written (``write(2)``, one JSON line) to the current segment before it
counts as queued. A process killed at any moment therefore loses nothing the kernel has
accepted; a machine crash loses at most the rows not yet ``fsync``ed, which the writer
does each time it rotates a segment out (once per flush interval).

Each segment is ``<owner>-<n>.jsonl`` and is held with an exclusive ``flock`` by the
process that owns it, until its rows are committed and the file is deleted. The kernel
drops the lock when a process dies, so at start-up a segment whose lock can be taken is
an orphan: its rows are replayed (the ledger ignores event ids it already has) and the
file deleted. Several workers or replicas sharing a folder never replay each other's live
segments.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".jsonl"


@dataclass(eq=False, slots=True)
class Segment:
    path: Path
    fd: int
    size: int = 0
    synced: bool = False


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._owner = uuid.uuid4().hex[:12]
        self._n = 0
        self._current: Segment | None = None
        self._held: list[Segment] = []  # rotated out, not yet committed
        self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes

    def open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._current = self._new_segment()

    def _new_segment(self) -> Segment:
        self._n += 1
        path = self.directory / f"{self._owner}-{self._n}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        _lock(fd)  # a fresh name nobody else knows: always succeeds
        return Segment(path, fd)

    def append(self, line: bytes) -> bool:
        """Append one line; False (nothing written) when full or the disk refuses."""
        seg = self._current
        if seg is None or self._bytes + len(line) > self._max_bytes:
            return False
        try:
            written = os.write(seg.fd, line)
        except OSError:
            return False
        seg.size += written
        self._bytes += written
        if written != len(line):  # a short write (disk full): cut the torn line off
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, seg.size - written)
                seg.size -= written
                self._bytes -= written
            return False
        return True

    def rotate(self) -> Segment | None:
        """Start a new segment and return the previous one (None when it was empty).
        The returned segment stays locked until ``release``."""
        old = self._current
        if old is None or old.size == 0:
            return None
        self._current = self._new_segment()
        self._held.append(old)
        return old

    @staticmethod
    def sync(segment: Segment) -> None:
        """fsync (blocking: call it in a thread)."""
        if not segment.synced:
            os.fsync(segment.fd)
            segment.synced = True

    def release(self, segment: Segment) -> None:
        """The segment's rows are committed: delete it."""
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)
        if segment in self._held:
            self._held.remove(segment)
            self._bytes -= segment.size

    def claim_orphans(self) -> list[Segment]:
        """Lock and return the segments left behind by dead processes (blocking I/O)."""
        mine = {s.path for s in self._held}
        if self._current is not None:
            mine.add(self._current.path)
        found: list[Segment] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in mine:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # another process replayed and deleted it
                continue
            if not _lock(fd):  # its owner is alive
                os.close(fd)
                continue
            if not path.exists():  # deleted between our open and our lock
                os.close(fd)
                continue
            size = os.fstat(fd).st_size
            seg = Segment(path, fd, size=size, synced=True)
            self._held.append(seg)
            self._bytes += size
            found.append(seg)
        return found

    @staticmethod
    def read(segment: Segment) -> list[bytes]:
        """The segment's lines (blocking I/O). A torn last line is returned as is; the
        caller decides it does not parse."""
        with open(segment.path, "rb") as f:
            return [line for line in f.read().split(b"\n") if line]

    def close(self) -> None:
        """Close the current segment; delete it when empty. Held segments stay on disk
        (locks drop with the descriptors) for the next start to replay."""
        seg, self._current = self._current, None
        if seg is not None:
            if seg.size == 0:
                with contextlib.suppress(FileNotFoundError):
                    seg.path.unlink()
            os.close(seg.fd)
        for held in self._held:
            with contextlib.suppress(OSError):
                os.close(held.fd)
        self._held.clear()
