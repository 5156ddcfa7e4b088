"""Whole objects (small files) on the lake's storage: a local folder, ``file://`` or ``s3://``.

For what is not a Delta table but must be reachable from every worker without a shared disk: the
outputs one step hands to another (``orchestration.io``) and the Parquet files a bucket step
writes for another step to commit (``Lake.stage_partitions``). It takes the storage options the
lake takes (``SEQ_STORAGE_OPTIONS``: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


def _truthy(value: str | None) -> bool:
    return str(value or "").lower() in ("1", "true", "yes")


def filesystem(uri: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of ``uri`` and the path inside it."""
    if uri.startswith("file://"):
        return pafs.LocalFileSystem(), uri[len("file://"):]
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a"):
        raise ValueError(f"objects: unsupported storage scheme {parsed.scheme!r} in {uri!r} (local paths, file:// or s3://)")
    opts = {str(k).upper(): v for k, v in (storage_options or {}).items()}
    endpoint = opts.get("AWS_ENDPOINT_URL") or opts.get("AWS_ENDPOINT")
    kw: dict = {"region": opts.get("AWS_REGION") or opts.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if opts.get("AWS_ACCESS_KEY_ID"):
        kw["access_key"] = opts["AWS_ACCESS_KEY_ID"]
        kw["secret_key"] = opts.get("AWS_SECRET_ACCESS_KEY", "")
        if opts.get("AWS_SESSION_TOKEN"):
            kw["session_token"] = opts["AWS_SESSION_TOKEN"]
    if endpoint:
        ep = urlparse(endpoint)
        kw["endpoint_override"] = ep.netloc or ep.path
        kw["scheme"] = ep.scheme or ("http" if _truthy(opts.get("AWS_ALLOW_HTTP")) else "https")
    return pafs.S3FileSystem(**kw), parsed.netloc + parsed.path


def put_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> int:
    """Write ``data`` as the object at ``uri`` (parents created); returns its size."""
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)
    return len(data)


def get_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(uri: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete_tree(uri: str, storage_options: dict | None = None) -> None:
    """Delete the folder (or key prefix) ``uri`` and everything under it; nothing there is fine."""
    fs, path = filesystem(uri, storage_options)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
