"""Schemathesis hooks for `sandbox fuzz` (loaded through SCHEMATHESIS_HOOKS).

`/events` is a long poll: `wait` holds the request up to 30 s when no event
follows the cursor. The fuzzer checks what the bank answers, not how long it
can wait, so a wait within the documented 0 to 30 s is cut to a tenth of a
second before the request goes out; every other value (a wait out of range
included, which the bank must refuse) is sent as generated.
"""

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    query = case.query
    if isinstance(query, dict) and "wait" in query:
        try:
            wait = float(query["wait"])
        except (TypeError, ValueError):
            return
        if 0.1 < wait <= 30:
            query["wait"] = 0.1
