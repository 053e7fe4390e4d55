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

And for speed: moto's SQS reads its clock through datetime arithmetic for every message each time it
counts a queue's messages (on every send and receive), which makes a queue of a few thousand messages take
tens of milliseconds per request. Here it reads time.time(). And it counts a queue's messages (three passes
over it) whenever it reads any of the queue's attributes, on every send and receive; here only for
GetQueueAttributes.

One addition: SQS fair queues. A standard queue's messages that carry a MessageGroupId are delivered so that a
group with a backlog does not hold back the others (AWS's fair queues, 2025); moto 5.2 stores the group and
delivers in arrival order. Here the visible messages are offered in turns of their groups, those with the
fewest messages in flight first, each group's in arrival order: the first message of a group that just arrived
is the next receive's.

And two for a listing of a million keys (the 1M-object plan bench):
- moto's ListObjectsV2 collects and sorts every key of the bucket for each page: 7 s a page at 1M keys, hours
  a listing. Here each bucket keeps its key names sorted, updated as keys come and go, and a page is found by
  bisection: the same keys, common prefixes, order and continuation tokens, in milliseconds. And its response
  serializer parses each key's LastModified back with dateutil; here with the standard library.
- `POST /_dmap/seed?bucket=B&prefix=P&count=N&digits=D&body=TEXT` puts N objects `P<i, D digits>.txt` holding
  TEXT into bucket B in-process (about 10,000 a second; a PutObject a key over HTTP is some 500 a second), and
  a plain GetObject of such an object is answered without moto's dispatch (see `_SeedingApplication`).
"""

import bisect
import datetime
import functools
import inspect
import logging
import re
import sys
import threading
import time
import urllib.parse
import uuid

import moto.backends
import moto.moto_server.threaded_moto_server
import moto.sqs.models
from moto.core.utils import unix_time as _unix_time
from moto.core.serialize import TimestampSerializer
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.s3.models import FakeDeleteMarker, S3Backend, s3_backends
from moto.s3.utils import _VersionedKeyStore
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

# moto computes a queue's every attribute, its three message counts among them (each a pass over the queue),
# to read one: on every message sent (ContentBasedDeduplication), three times for every message received (its
# retention period), and three times for each attribute a GetQueueAttributes names. Here the counts are taken
# only for a GetQueueAttributes, once for all the attributes it names.
_counting = threading.local()
for _count in (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
):
    _counted = getattr(Queue, _count).fget
    setattr(
        Queue,
        _count,
        property(lambda queue, _get=_counted: _get(queue) if getattr(_counting, "on", False) else 0),
    )
_get_queue_attributes = SQSBackend.get_queue_attributes


def _queue_attributes(self, queue_name, attribute_names):
    # moto's own answer validates the names (cheaply: without the counts, which it may take many times).
    named = _get_queue_attributes(self, queue_name, attribute_names)
    if not any(n.startswith("Approximate") or n == "All" for n in attribute_names):
        return named
    _counting.on = True
    try:
        every = self.get_queue(queue_name).attributes
    finally:
        _counting.on = False
    if "All" in attribute_names:
        return every
    return {n: every[n] for n in attribute_names if every.get(n) is not None}


SQSBackend.get_queue_attributes = _serialized(_queue_attributes, _sqs_lock)


def _retained(self, queue_name, message):
    retention_period = self.get_queue(queue_name).message_retention_period
    return int(retention_period) + message.sent_timestamp / 1000 > time.time()


SQSBackend.is_message_valid_based_on_retention_period = _retained

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

# A bucket's key names, sorted: built at its first listing, then kept up to date by every change of its names
# (a new name, a removed one; a new version of a key changes no name). One lock for all buckets' indexes: an
# insertion is a search and an insert, which must not interleave with another's.
_names_lock = threading.RLock()


def _names(store):
    with _names_lock:
        names = store.__dict__.get("_dmap_names")
        if names is None:
            names = sorted(dict.keys(store))
            store._dmap_names = names
        return names


def _added(store, key):
    names = store.__dict__.get("_dmap_names")
    if names is not None:
        i = bisect.bisect_left(names, key)
        if i == len(names) or names[i] != key:
            names.insert(i, key)


def _removed(store, key):
    names = store.__dict__.get("_dmap_names")
    if names is not None:
        i = bisect.bisect_left(names, key)
        if i < len(names) and names[i] == key:
            del names[i]


def _indexing(method, change):
    @functools.wraps(method)
    def wrapper(self, key, *args, **kwargs):
        with _names_lock:
            result = method(self, key, *args, **kwargs)
            change(self, key)
            return result

    return wrapper


_VersionedKeyStore.__setitem__ = _indexing(_VersionedKeyStore.__setitem__, _added)
_VersionedKeyStore.setlist = _indexing(_VersionedKeyStore.setlist, _added)
_VersionedKeyStore.pop = _indexing(_VersionedKeyStore.pop, _removed)
_VersionedKeyStore.__delitem__ = _indexing(dict.__delitem__, _removed)


def _clear(store):
    with _names_lock:
        dict.clear(store)
        store.__dict__.pop("_dmap_names", None)


_VersionedKeyStore.clear = _clear
_list_objects_v2 = S3Backend.list_objects_v2


def _fast_list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
    if not isinstance(bucket.keys, _VersionedKeyStore):
        return _list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    prefix = prefix or ""
    if continuation_token:
        limit = self._pagination_tokens.get(continuation_token)
    else:
        limit = start_after
    entries = []
    more = False
    with _names_lock:
        names = _names(bucket.keys)
        i = bisect.bisect_left(names, prefix)
        if limit is not None:
            i = max(i, bisect.bisect_right(names, limit))
        while i < len(names):
            name = names[i]
            if not name.startswith(prefix):
                break
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter)[0] + delimiter
                # Every key under the folder rolls up into it: on to the first name past them.
                # The first name past them: the folder with its last character's successor.
                i = bisect.bisect_left(names, folder[:-1] + chr(ord(folder[-1]) + 1), i)
                if limit is not None and folder <= limit:
                    continue
                entry = folder
            else:
                i += 1
                key = bucket.keys.get(name)
                if key is None or isinstance(key, FakeDeleteMarker):
                    continue
                entry = key
            if len(entries) == max_keys:
                more = True
                break
            entries.append(entry)
    if not more:
        return entries, False, None
    # moto's own token: the last entry's name, hashed and remembered.
    return self._truncate_result(entries + [None], max_keys)


S3Backend.list_objects_v2 = _fast_list_objects_v2

_convert_timestamp = TimestampSerializer._convert_timestamp_to_str


def _fast_convert_timestamp(self, value, timestamp_format):
    # moto's serializer parses each ISO 8601 timestamp it was handed (a listing's LastModified, 1,000 a page)
    # with dateutil, half a page's time; the standard library's parser reads the same strings.
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            parsed = parsed.astimezone(datetime.timezone.utc)
            return getattr(self, f"_timestamp_{timestamp_format.lower()}")(parsed)
    return _convert_timestamp(self, value, timestamp_format)


TimestampSerializer._convert_timestamp_to_str = _fast_convert_timestamp


_PLAIN_KEY = re.compile(r"/([a-z0-9.-]+)/([A-Za-z0-9._/-]+)")
# A GET with any of these asks for more than the whole object as it is: moto answers it.
_CONDITIONS = ("HTTP_RANGE", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
               "HTTP_IF_UNMODIFIED_SINCE", "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_CUSTOMER_ALGORITHM", "HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")


def _seeded_object(environ):
    """The seeded object a plain GetObject asks for, if that is what it is."""
    # The SDKs name the operation in the query (`x-id=GetObject`); anything more asks for more.
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING", "") not in ("", "x-id=GetObject"):
        return None
    if "/s3/aws4_request" not in environ.get("HTTP_AUTHORIZATION", ""):
        return None
    if any(name in environ for name in _CONDITIONS):
        return None
    match = _PLAIN_KEY.fullmatch(environ.get("PATH_INFO", ""))
    if match is None or match[1] not in s3_backends.bucket_accounts:
        return None
    partition, account = s3_backends.bucket_accounts[match[1]]
    bucket = s3_backends[account][partition].buckets.get(match[1])
    key = bucket.keys.get(match[2]) if bucket is not None else None
    # A checksum asked for (the SDKs ask by default) changes nothing for an object stored without one.
    if not getattr(key, "_dmap_seeded", False) or key.checksum_algorithm is not None:
        return None
    # moto's answer carries more headers for a key given a version, encryption, a lock or tags since it was
    # seeded (or seeded into a bucket that gives them): moto answers those.
    if bucket.versioning_status is not None or bucket.encryption is not None:
        return None
    if key.encryption is not None or key.lock_mode or key.lock_legal_status or key.lock_until:
        return None
    if s3_backends[account][partition].tagger.get_tag_dict_for_resource(key.arn):
        return None
    return key


class _SeedingApplication(DomainDispatcherApplication):
    """moto's application, with a route of ours, seeding a bucket in-process, and a short way for a plain
    GetObject of an object seeded so. moto's way through Flask and its dispatch is most of the 5 ms it spends
    on one: a million-object job's reads would take over an hour. The short way answers with the headers
    moto's does for such an object (no version, encryption, tags or checksum: the seeding gives it none)."""

    def __call__(self, environ, start_response):
        key = _seeded_object(environ)
        if key is not None:
            body = key.value
            start_response("200 OK", [
                ("ETag", key.etag),
                ("Last-Modified", key.last_modified_RFC1123),
                ("Content-Length", str(len(body))),
                ("Content-Type", "binary/octet-stream"),
                ("Accept-Ranges", "bytes"),
                ("x-amzn-requestid", uuid.uuid4().hex),
            ])
            return [body]
        if environ.get("PATH_INFO") != "/_dmap/seed":
            return super().__call__(environ, start_response)
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        try:
            bucket = query["bucket"]
            count = int(query["count"])
            digits = int(query.get("digits", len(str(max(count - 1, 0)))))
            prefix = query.get("prefix", "")
            body = query.get("body", "x").encode()
            partition, account = s3_backends.bucket_accounts[bucket]
            backend = s3_backends[account][partition]
            for i in range(count):
                backend.put_object(bucket, f"{prefix}{i:0{digits}d}.txt", body)._dmap_seeded = True
        except Exception as error:  # the caller sees why, not a dropped connection
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [f"seed: {error!r}\n".encode()]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{count}\n".encode()]


moto.moto_server.threaded_moto_server.DomainDispatcherApplication = _SeedingApplication

# moto finds a request's service by listing its own package's folders, on every request, with a stat of each:
# a tenth of a small request's time. They do not change while it runs.
_moto_modules = tuple(moto.backends.list_of_moto_modules())
moto.backends.list_of_moto_modules = lambda: _moto_modules

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
