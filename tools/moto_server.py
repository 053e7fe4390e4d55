"""Serves moto (S3, SQS, DynamoDB over HTTP) on 127.0.0.1.

    python tools/moto_server.py          a free port, until standard input closes (how the tests run it: they
                                         hold the other end, so the server ends with them, however they end)
    python tools/moto_server.py PORT     that port, until stopped (kill, or Ctrl-C in the foreground)

Prints "ready <port>" once it accepts connections.

One correction to moto (5.2.x): its TransactWriteItems backs up whole tables and, when a transaction is
cancelled, restores them, with no lock. Under concurrent requests a cancelled transaction (a duplicate batch
record, say) then erases writes that other requests committed meanwhile: lost updates real DynamoDB never
makes. Every DynamoDB backend operation is serialized here, which makes the rollback atomic, as the service's
transactions are.

The same for SQS: its receive checks that a message is visible, then marks it received, with no lock, so two
concurrent receives can both take one message; and a receive can fail while another changes the set of
messages in flight. Real SQS does deliver a message twice, but rarely; tests that count reads must not see it
on every run. Every SQS backend operation is serialized here too; a long-polling receive waits for messages
outside the lock, so that it does not hold up the others.

And one for speed: moto's SQS reads its clock through datetime arithmetic for every message each time it
counts a queue's messages (on every send and receive), which makes a queue of a few thousand messages take
tens of milliseconds per request. Here it reads time.time().

One addition: SQS fair queues. A standard queue's messages that carry a MessageGroupId are delivered so that a
group with a backlog does not hold back the others (AWS's fair queues, 2025); moto 5.2 stores the group and
delivers in arrival order. Here the visible messages are offered in turns of their groups, those with the
fewest messages in flight first, each group's in arrival order: the first message of a group that just arrived
is the next receive's.
"""

import functools
import inspect
import logging
import sys
import threading
import time

import moto.sqs.models
from moto.core.utils import unix_time as _unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.server import ThreadedMotoServer
from moto.sqs.models import Queue, SQSBackend

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

_dynamodb_lock = threading.RLock()


def _serialized(method, lock):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with lock:
            return method(*args, **kwargs)

    return wrapper


for _name, _method in inspect.getmembers(DynamoDBBackend, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialized(_method, _dynamodb_lock))



def _fast_unix_time(dt=None):
    return time.time() if dt is None else _unix_time(dt)


moto.sqs.models.unix_time = _fast_unix_time
moto.sqs.models.unix_time_millis = lambda dt=None: _fast_unix_time(dt) * 1000.0

_sqs_lock = threading.RLock()
_receive_once = SQSBackend.receive_message

for _name, _method in inspect.getmembers(SQSBackend, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(SQSBackend, _name, _serialized(_method, _sqs_lock))


def _receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, *args, **kwargs):
    # One pass over the queue under the lock; the long poll's waits outside it.
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        with _sqs_lock:
            received = _receive_once(self, queue_name, count, 0, visibility_timeout, *args, **kwargs)
            queue = self.get_queue(queue_name)
        left = deadline - time.monotonic()
        if received or left <= 0:
            return received
        queue.wait_for_messages(min(left, 1))


SQSBackend.receive_message = _receive_message

_visible_messages = Queue.messages.fget


def _fair_messages(queue):
    messages = _visible_messages(queue)
    if queue.fifo_queue or not any(m.group_id for m in messages):
        return messages
    # As AWS's fair queues do, the groups with the fewest messages in flight come first (a receive of one
    # message would otherwise always take the first group's, however many of them are in flight); then the
    # groups take turns, each group's messages in arrival order.
    in_flight = {}
    for message in queue._messages:
        if not message.visible and not message.delayed:
            in_flight[message.group_id] = in_flight.get(message.group_id, 0) + 1
    groups = {}
    for message in messages:
        groups.setdefault(message.group_id, []).append(message)
    order = sorted(groups.values(), key=lambda g: in_flight.get(g[0].group_id, 0))
    turns = []
    for i in range(max(len(g) for g in order)):
        turns.extend(g[i] for g in order if i < len(g))
    return turns


Queue.messages = property(_fair_messages)

fixed_port = int(sys.argv[1]) if len(sys.argv) > 1 else None
server = ThreadedMotoServer(ip_address="127.0.0.1", port=fixed_port or 0, verbose=False)
server.start()
print(f"ready {server.get_host_and_port()[1]}", flush=True)
try:
    if fixed_port:
        threading.Event().wait()
    else:
        sys.stdin.read()
except KeyboardInterrupt:
    pass
server.stop()
