"""The few filesystem operations :class:`~kstreamlet.sinks.files.FileSink` needs: local (``os``)
or any fsspec filesystem."""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

class Storage:
    """The few filesystem operations the sink needs: local (os) or any fsspec filesystem."""

    def __init__(self, base_path: str, filesystem: Any = None, storage_options: Mapping[str, Any] | None = None) -> None:
        plain = filesystem is None and not storage_options and (
            "://" not in base_path or base_path.startswith("file://"))
        if plain:
            # A local path needs no fsspec (it is only in the parquet extra).
            self.fs: Any = None
            self.local = True
            path = base_path[len("file://"):] if base_path.startswith("file://") else base_path
        else:
            try:
                import fsspec
                from fsspec.implementations.local import LocalFileSystem
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(f"writing to {base_path!r} needs fsspec: pip install 'kstreamlet[parquet]'") from e
            if filesystem is None:
                fs, path = fsspec.core.url_to_fs(base_path, **(storage_options or {}))
            else:
                fs, path = filesystem, filesystem._strip_protocol(base_path)
            self.fs = fs
            self.local = isinstance(fs, LocalFileSystem)
        self.base = os.path.abspath(path) if self.local else str(path).rstrip("/")
        self.sep = os.sep if self.local else "/"

    def join(self, *parts: str) -> str:
        return self.sep.join([self.base, *[p for p in parts if p]])

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def open_new(self, path: str) -> Any:
        if self.local:
            return open(path, "xb")  # exclusive: never clobber another writer's file
        return self.fs.open(path, "wb")

    def open_append(self, path: str) -> Any:
        return open(path, "ab")  # only used on local filesystems (resumable row files)

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))

    def rename(self, src: str, dst: str) -> None:
        if self.local:
            os.replace(src, dst)  # atomic on POSIX
        else:
            self.fs.mv(src, dst)

    def delete(self, path: str) -> None:
        try:
            if self.local:
                os.remove(path)
            else:
                self.fs.rm(path)
        except FileNotFoundError:
            pass

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def size(self, path: str) -> int:
        return os.path.getsize(path) if self.local else int(self.fs.size(path))

    def walk(self, buckets: set[str] | None) -> Iterator[tuple[str, str]]:
        """``(bucket, file name)`` of files in the given buckets, or anywhere under the base path."""
        if buckets is not None:
            for b in buckets:
                d = self.join(b)
                try:
                    names = os.listdir(d) if self.local else [p.rsplit("/", 1)[-1] for p in self.fs.ls(d, detail=False)]
                except FileNotFoundError:
                    continue
                for name in names:
                    yield b, name
            return
        if self.local:
            for dirpath, _dirs, files in os.walk(self.base):
                rel = os.path.relpath(dirpath, self.base)
                bucket = "" if rel == "." else rel.replace(os.sep, "/")
                for name in files:
                    yield bucket, name
            return
        if not self.fs.exists(self.base):
            return
        for p in self.fs.find(self.base):
            rel = p[len(self.base):].lstrip("/")
            bucket, _, name = rel.rpartition("/")
            yield bucket, name


__all__ = ["Storage"]
