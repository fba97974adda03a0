"""Run files on a local path or any URI pyarrow understands (s3://, gs://, ...).

Ray Train already writes checkpoints through pyarrow's filesystems; moatforge's own run files
(config.yaml, metrics.jsonl, summary.json, final/) go through the same layer so one `run.storage_path`
works for both. Writes are whole-file and atomic: a temp name then a rename on local disks, a single PUT
on object stores (which never expose half an object).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def absolute(path: str) -> str:
    """Ray Train wants an absolute local path or a URI; relative paths are relative to where the user ran."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_bytes(path: str, data: bytes) -> None:
    fs, p = resolve(path)
    parent = p.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, p)
    else:
        with fs.open_output_stream(p) as out:
            out.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def read_text(path: str) -> str | None:
    fs, p = resolve(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read().decode("utf-8")
    except (FileNotFoundError, OSError):
        return None


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def list_files(path: str, suffixes: tuple[str, ...]) -> list[tuple[str, int]] | None:
    """``(path, size)`` of a file, or of the files below a folder ending in ``suffixes``, sorted by path.

    Paths come back in the caller's form (``s3://...`` stays a URI); ``None`` means the path does not exist.
    """
    fs, p = resolve(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = [
            i
            for i in fs.get_file_info(pafs.FileSelector(p, recursive=True))
            if i.type == pafs.FileType.File and i.path.endswith(suffixes)
        ]
    prefix = path.split("://", 1)[0] + "://" if is_uri(path) else ""
    return sorted((prefix + i.path if prefix and not i.path.startswith(prefix) else i.path, i.size) for i in infos)


def upload_dir(local_dir: str | Path, dest: str) -> None:
    """Copy a finished local directory to its final place; a rename makes it appear whole on local disks."""
    fs, p = resolve(dest)
    if isinstance(fs, pafs.LocalFileSystem):
        import shutil

        Path(p).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(local_dir, tmp)
        if os.path.exists(p):
            shutil.rmtree(p)
        os.replace(tmp, p)
        return
    fs.create_dir(p, recursive=True)
    pafs.copy_files(str(local_dir), p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_dir(src: str, local_dir: str | Path) -> None:
    fs, p = resolve(src)
    pafs.copy_files(p, str(local_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
