"""The moto S3 server of ``tests/support/s3.py`` in a process of its own, for tests whose own
process calls deltalake functions that hold the GIL while they wait on the store
(``DeltaTable.alter.set_table_properties`` in deltalake 1.6: an in-process server then cannot
answer, and the call fails after its 180 s retry timeout), and for tests whose writers are several
processes. The server ends when the test process ends (it reads its standard input to the end).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

from tests.support.s3 import S3Server

_SERVE = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def s3_process_server():
    """A moto server on a free loopback port in a child process; yields its :class:`S3Server`."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the moto server did not start (exit code {proc.poll()})")
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

