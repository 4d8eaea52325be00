"""Audit records from Python services, written through auditd (POST /api/v1/events).

The original design's helpers (``create_log``, ``log_auth_event``,
``log_device_onboarding``, ``log_system_event``) keep their signatures, but a call never
waits on the network or the database: it stamps the record and puts it in a bounded
queue, and a background thread sends batches as NDJSON. A batch that gets no answer is sent
again with the same ``Idempotency-Key``, so auditd commits it once however often it
arrives; the queue is flushed at exit. Standard library only (Python 3.8+).

    from audit_client import configure, log_auth_event

    configure("https://auditd.internal:8443", token="...")   # a token with the write scope
    log_auth_event("alice", "login", ip_address="10.1.2.3", user_id=7)

Or with a client of your own:

    client = AuditClient(url, token)
    client.create_log("system", "backup", "Backup completed", metadata={"success_count": 48})
    client.close()
"""

import atexit
import datetime
import email.utils
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid

__all__ = [
    "AuditClient",
    "configure",
    "create_log",
    "log_auth_event",
    "log_device_onboarding",
    "log_system_event",
]

log = logging.getLogger("audit_client")

# Statuses that say the request itself is wrong, so sending it again cannot help. Every
# other failure (no answer, 401/403 while a token is being rotated, 409, 429, 5xx) is
# retried with the same key until auditd takes the batch: records are kept, not dropped.
PERMANENT = {400, 413, 415, 422}


class AuditClient:
    """Sends audit records to auditd in the background.

    ``create_log`` never blocks: when ``max_queue`` records are waiting (auditd unreachable
    for long), new ones are dropped and counted in ``stats["dropped"]``, and a warning is
    logged; the request path is never held up by the audit log.
    """

    def __init__(
        self,
        url,
        token,
        batch_size=500,
        flush_interval=0.5,
        max_queue=100_000,
        timeout=10.0,
        max_backoff=30.0,
    ):
        self.endpoint = url.rstrip("/") + "/api/v1/events"
        self.token = token
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.stats = {
            "queued": 0,
            "sent": 0,
            "dropped": 0,
            "invalid": 0,
            "retries": 0,
            "duplicates": 0,
            "fixups": 0,
            "refused": 0,
        }
        self._queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Records queued, and records done with (sent or refused), since the start: the
        # sender takes them in order, so a flush waits for `done` to reach `queued` as it
        # was when the flush began.
        self._queued_total = 0
        self._done_total = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-client", daemon=True)
        self._thread.start()

    def create_log(
        self,
        username,
        event_type,
        message,
        user_id=None,
        ip_address=None,
        resource_type=None,
        resource_id=None,
        resource_name=None,
        severity="info",
        metadata=None,
        created_at=None,
    ):
        """Queues one record with every column of ``audit_logs``; returns False if it was
        dropped (the queue is full, the client closed, or a value is not JSON: NaN, or an
        object ``str()`` cannot render). Never raises, never waits."""
        record = {
            "username": username,
            "event_type": event_type,
            "message": message,
            "severity": severity,
            # Stamped now: a record sent late (auditd was down) keeps its own time.
            "created_at": _rfc3339(created_at or datetime.datetime.now(datetime.timezone.utc)),
        }
        for name, value in (
            ("user_id", user_id),
            ("ip_address", ip_address),
            ("resource_type", resource_type),
            ("resource_id", resource_id),
            ("resource_name", resource_name),
            ("metadata", metadata),
        ):
            if value is not None:
                record[name] = value
        try:
            # Serialized now, on the caller's thread: what is sent is the record as it was
            # when logged (a metadata dict changed later does not change it), and a value
            # that is not JSON is reported here rather than failing a whole batch.
            # UTF-8 as it will be sent: a lone surrogate fails here, not in auditd.
            line = json.dumps(
                record, separators=(",", ":"), default=str, allow_nan=False, ensure_ascii=False
            ).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:
            with self._lock:
                self.stats["invalid"] += 1
            log.warning("audit record not queued: %s", e)
            return False
        dropped = None
        with self._lock:
            if self._closed:
                self.stats["dropped"] += 1
                return False
            try:
                self._queue.put_nowait(line + b"\n")
                self.stats["queued"] += 1
                self._queued_total += 1
            except queue.Full:
                self.stats["dropped"] += 1
                dropped = self.stats["dropped"]
        if dropped is not None:
            # Logged outside the lock: a handler that logs audit records again must not
            # find it held.
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("audit queue full: %d records dropped", dropped)
            return False
        return True

    def flush(self, timeout=None):
        """Waits until every record queued before this call is committed (or refused);
        False on timeout. Records queued meanwhile do not hold it up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            target = self._queued_total
            while self._done_total < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout=10.0):
        """Stops taking records, sends what is queued (waiting at most ``timeout``
        seconds), and says so loudly when it could not."""
        with self._lock:
            self._closed = True
        flushed = self.flush(timeout)
        if not flushed:
            with self._lock:
                left = self._queued_total - self._done_total
            log.error("audit client closed with %d records not sent to auditd", left)
        return flushed

    def _run(self):
        while True:
            try:
                self._run_once()
            except Exception:  # noqa: BLE001 - the thread must outlive anything
                log.exception("audit client sender failed; going on")
                time.sleep(1.0)

    def _run_once(self):
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    if left > 0:
                        batch.append(self._queue.get(timeout=left))
                    else:
                        batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            finally:
                with self._idle:
                    self._done_total += len(batch)
                    self._idle.notify_all()

    def _send(self, batch):
        """Sends one batch until auditd has it: the same body under the same key on every
        attempt, so a retry of a batch that did commit is answered as a duplicate. Never
        raises: the sender thread must outlive any answer."""
        body = b"".join(batch)
        key = str(uuid.uuid4())
        backoff = 0.2
        while True:
            try:
                status, answer, retry_after = self._post(body, key)
            except Exception as e:  # noqa: BLE001 - the thread must not die
                status, answer, retry_after = None, "unexpected error: %r" % (e,), None
            if not isinstance(answer, dict):
                answer = {"error": answer}
            if status in (200, 202):
                with self._lock:
                    self.stats["sent"] += len(batch)
                    fixups = answer.get("fixups")
                    self.stats["fixups"] += fixups if isinstance(fixups, int) else 0
                    if answer.get("duplicate"):
                        self.stats["duplicates"] += 1
                return
            if status == 413 and len(batch) > 1:
                # Refused whole (a body over auditd's limit), so nothing of it committed:
                # send it in halves, each under a key of its own.
                half = len(batch) // 2
                self._send(batch[:half])
                self._send(batch[half:])
                return
            if status in PERMANENT:
                with self._lock:
                    self.stats["refused"] += len(batch)
                log.error("auditd refused %d audit records: %s %s", len(batch), status, answer)
                return
            with self._lock:
                self.stats["retries"] += 1
            wait = retry_after if retry_after is not None else backoff
            level = logging.ERROR if status in (401, 403) else logging.WARNING
            log.log(level, "audit records not sent (%s %s); retrying in %.1fs", status, answer, wait)
            time.sleep(max(0.0, min(wait, self.max_backoff)))
            backoff = min(backoff * 2, self.max_backoff)

    def _post(self, body, key):
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Authorization": "Bearer " + self.token,
                "Content-Type": "application/x-ndjson",
                "Idempotency-Key": key,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}"), None
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read() or b"{}")
            except (OSError, ValueError):
                answer = {}
            return e.code, answer, _seconds(e.headers.get("Retry-After"))
        except (OSError, ValueError) as e:
            # No answer at all (refused, reset, timed out): it may or may not have
            # committed, which the same key settles.
            return None, str(e), None


def _seconds(retry_after):
    """Retry-After as seconds: a number, or an HTTP date; None when it is neither."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _rfc3339(moment):
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.isoformat()


_default = None


def configure(url, token, **options):
    """Sets up the client the helpers below use; flushed at exit."""
    global _default
    if _default is not None:
        _default.close()
    _default = AuditClient(url, token, **options)
    atexit.register(_default.close)
    return _default


def _client():
    if _default is None:
        raise RuntimeError("call audit_client.configure(url, token) first")
    return _default


def create_log(username, event_type, message, **columns):
    """Queues a record with any of the columns of ``audit_logs`` (see AuditClient)."""
    return _client().create_log(username, event_type, message, **columns)


def log_auth_event(username, action, ip_address=None, user_id=None, success=True):
    """Logs authentication events: ``action`` is "login", "logout" or "login_failed"."""
    return create_log(
        username,
        "authentication",
        "User %s" % action,
        user_id=user_id,
        ip_address=ip_address,
        severity="info" if success else "warning",
    )


def log_device_onboarding(
    username, device_name, device_id=None, user_id=None, success=True, error_message=None
):
    """Logs device onboarding events."""
    message = "Device '%s' onboarded to Nautobot" % device_name
    if not success and error_message:
        message += " - Error: %s" % error_message
    return create_log(
        username,
        "onboarding",
        message,
        user_id=user_id,
        resource_type="device",
        resource_id=device_id,
        resource_name=device_name,
        severity="info" if success else "error",
    )


def log_system_event(message, event_type="system", severity="info", metadata=None):
    """Logs system events (backups, syncs, scheduled jobs)."""
    return create_log("system", event_type, message, severity=severity, metadata=metadata)
