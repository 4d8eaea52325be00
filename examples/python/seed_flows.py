#!/usr/bin/env python3
"""Writes the original design's flows to auditd through audit_client.

    python3 examples/python/seed_flows.py --url http://127.0.0.1:8080 --token TOKEN

A login, a logout and a failed login; a device onboarded and one that failed; a backup
with its counts in metadata. Exits 0 once auditd has committed every record, 1 if it did
not within --timeout seconds or refused any.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import audit_client  # noqa: E402
from audit_client import (  # noqa: E402
    log_auth_event,
    log_device_onboarding,
    log_system_event,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AUDITD_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("AUDITD_WRITE_TOKEN"))
    parser.add_argument("--rounds", type=int, default=1, help="how many times to write the flows")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or AUDITD_WRITE_TOKEN) is required: a token with the write scope")

    client = audit_client.configure(args.url, args.token)
    for _ in range(args.rounds):
        # The authentication router.
        log_auth_event("alice", "login", ip_address="10.1.2.3", user_id=7, success=True)
        log_auth_event("alice", "logout", ip_address="10.1.2.3", user_id=7, success=True)
        log_auth_event("mallory", "login_failed", ip_address="203.0.113.9", success=False)
        # The onboarding router.
        log_device_onboarding(
            "alice", "edge-fra1-01", device_id="5f0c1a2e-0001", user_id=7, success=True
        )
        log_device_onboarding(
            "alice",
            "edge-ams2-07",
            user_id=7,
            success=False,
            error_message="SSH timeout after 30s",
        )
        # The scheduled backup job.
        log_system_event(
            "Backup completed: 48 devices backed up",
            event_type="backup",
            metadata={"success_count": 48, "failed_count": 2, "total_devices": 50},
        )
    if not client.close(args.timeout):
        print("auditd did not commit the records within %ss" % args.timeout, file=sys.stderr)
        return 1
    print(
        "sent %(sent)d records (%(retries)d retries, %(duplicates)d duplicates, "
        "%(refused)d refused, %(dropped)d dropped)" % client.stats
    )
    return 0 if client.stats["refused"] == 0 and client.stats["dropped"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
