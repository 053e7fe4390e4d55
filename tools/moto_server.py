"""Serves moto (S3, SQS, DynamoDB over HTTP) on 127.0.0.1 and a free port until standard input closes.

The test process that starts it holds the other end of stdin, so the server ends with that process, however
it ends. Prints "ready <port>" once it accepts connections.
"""

import logging
import sys

from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(f"ready {server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
server.stop()
