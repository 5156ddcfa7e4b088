"""A real S3 server on loopback for tests: moto's ``ThreadedMotoServer`` on a free port.

``s3_server`` (session scope) starts one server; ``s3_bucket`` gives each test a fresh bucket and
the storage options deltalake, polars and boto3 need to reach it. moto honours ``If-None-Match``
on put, which delta-rs 1.x commits rely on (see ``../shared/STYLE.md`` pitfalls).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT

    def storage_options(self) -> dict[str, str]:
        """The options every part of the platform takes (``SEQ_STORAGE_OPTIONS``)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def new_bucket(self, prefix: str = "lake") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@dataclass
class S3Bucket:
    server: S3Server
    name: str

    @property
    def storage_options(self) -> dict[str, str]:
        return self.server.storage_options()

    def uri(self, path: str = "") -> str:
        return f"s3://{self.name}/{path.strip('/')}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        out, client, token = [], self.server.client(), None
        while True:
            kw = {"Bucket": self.name, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = client.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]


def start_s3_server():
    """Start a moto S3 server on a free loopback port; returns (server, S3Server)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, S3Server(f"http://{host}:{port}")


@pytest.fixture(scope="session")
def s3_server():
    server, s3 = start_s3_server()
    try:
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> S3Bucket:
    return S3Bucket(s3_server, s3_server.new_bucket())
