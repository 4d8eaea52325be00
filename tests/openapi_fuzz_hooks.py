"""Schemathesis hooks for tests/openapi_fuzz.rs: how to send an NDJSON body.

The document gives `application/x-ndjson` as an array of records, one record a line on
the wire; Schemathesis has no serializer for it, so this is it.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    records = value if isinstance(value, list) else [value]
    return "".join(json.dumps(record) + "\n" for record in records).encode()
