"""What every video reader shares (decoding.py lists the readers and their interface).

A reader has `num_frames`, `get_frames(indices)` and `close()`; this base gives it the rest:
the context manager, and `decode_all` as a chunked walk through `get_frames` (PyAV overrides it
with one sequential decode, which is cheaper than seeking per chunk).
"""
from __future__ import annotations


class VideoReader:
    """Base of the readers: `with reader:` closes it; `decode_all` reads every frame."""

    num_frames: int

    def decode_all(self, chunk: int = 32) -> int:
        """Decode every frame (nothing kept); returns how many were decoded. For integrity scans."""
        done = 0
        for start in range(0, self.num_frames, chunk):
            done += len(self.get_frames(range(start, min(start + chunk, self.num_frames))))
        return done

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["VideoReader"]
