"""schemathesis hooks of the API fuzz test (``tests/serving/test_openapi.py``), loaded by the
``schemathesis`` command it runs (``SCHEMATHESIS_HOOKS=tests.support.fuzz_hooks``).

* The check ``error_has_a_message``: every 4xx is an Error, a non-empty message and its status.
* What the document cannot know, drawn by the fuzzer beside what it generates (``SEQ_FUZZ``, JSON):
  ``users`` who have events, an ``as_of`` when they have them, and the tenants' ``keys``; so requests
  reach past "no such user" and "no events", and a tenant that may not read a feature gets its 403.
"""

from __future__ import annotations

import json
import os

import schemathesis
from hypothesis import strategies as st

FUZZ = json.loads(os.environ.get("SEQ_FUZZ") or "{}")
USERS: list = FUZZ.get("users") or []
AS_OF: str | None = FUZZ.get("as_of")
KEYS: list[str] = FUZZ.get("keys") or []
API_KEY = "X-API-Key"


@schemathesis.check
def error_has_a_message(ctx, response, case):
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), \
            f"a {response.status_code} without a message: {response.text[:300]!r}"
        assert body.get("status") == response.status_code, f"a {response.status_code} saying status {body.get('status')!r}"
    return None


def _or(value, *variants: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(value), *variants)


@schemathesis.hook
def flatmap_path_parameters(context, params):
    if not isinstance(params, dict) or "user_id" not in params or not USERS:
        return st.just(params)
    return _or(params, st.sampled_from(USERS).map(lambda u: {**params, "user_id": u}))


@schemathesis.hook
def flatmap_query(context, query):
    if not isinstance(query, dict) or AS_OF is None:
        return st.just(query)
    return _or(query, st.just({**query, "as_of": AS_OF}))


@schemathesis.hook
def flatmap_body(context, body):
    if not isinstance(body, dict):
        return st.just(body)
    users = st.lists(st.sampled_from(USERS), max_size=5) if USERS else st.just([])
    return _or(body, st.just({**body, "as_of": AS_OF}) if AS_OF else st.nothing(),
               users.map(lambda ids: {**body, "user_ids": ids}))


@schemathesis.hook
def flatmap_headers(context, headers):
    if not KEYS:
        return st.just(headers)

    def keyed(key):
        out = {k: v for k, v in (headers or {}).items() if k.lower() != API_KEY.lower()}
        return out if key is None else {**out, API_KEY: key}

    # As generated (mostly a key no tenant has), none, or a tenant's (twice as likely: 200s and 403s).
    return _or(headers, st.sampled_from([None, *KEYS, *KEYS]).map(keyed))
