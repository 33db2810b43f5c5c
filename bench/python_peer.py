"""The Python path users take today, packaged as a Lambda function for the benchmark.

google-auth's AWS external-account credentials, impersonating a service account, behind a
plain Runtime API loop (awslambdaric segfaults against cargo-lambda's emulator). It serves the
same routes as the broker for the same events, so both sides do the same work per invocation:

- GET /healthz answers {"status": "ok"};
- GET or POST /token checks the IAM caller, reads {"scopes", "lifetime_seconds"} and answers
  the token of one google-auth credentials object per (scopes, lifetime), refreshed by
  google-auth when it nears expiry;
- one JSON log line per token issued, as the broker writes.

Environment: BROKER_CREDENTIAL_CONFIG (the external_account JSON), BROKER_ALLOWED_CALLERS
(role ARNs, `*` wildcards), BROKER_SCOPES, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN / AWS_REGION (read by google-auth), AWS_LAMBDA_RUNTIME_API.
"""

import datetime
import fnmatch
import http.client
import json
import os
import sys
import time

import google.auth.aws
import google.auth.transport.requests
import requests

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def load_config():
    info = json.loads(os.environ["BROKER_CREDENTIAL_CONFIG"])
    scopes = sorted(set(os.environ.get("BROKER_SCOPES", CLOUD_PLATFORM).replace(",", " ").split()))
    lifetime = info.get("service_account_impersonation", {}).get("token_lifetime_seconds", 3600)
    allowed = []
    for pattern in os.environ["BROKER_ALLOWED_CALLERS"].split(","):
        pattern = pattern.strip()
        allowed.append(pattern)
        if ":role/" in pattern:
            account, name = pattern.split(":iam::", 1)[1].split(":role/", 1)
            allowed.append(f"arn:aws:sts::{account}:assumed-role/{name}/*")
    return info, scopes, lifetime, allowed


INFO, SCOPES, MAX_LIFETIME, ALLOWED = load_config()
REQUEST = google.auth.transport.requests.Request(requests.Session())
CREDENTIALS = {}


def credentials_for(scopes, lifetime):
    key = (tuple(scopes), lifetime)
    if key not in CREDENTIALS:
        info = dict(INFO)
        info["service_account_impersonation"] = {"token_lifetime_seconds": lifetime}
        CREDENTIALS[key] = google.auth.aws.Credentials.from_info(info, scopes=list(scopes))
    return CREDENTIALS[key]


# Configuration loaded and validated at init, as the broker does.
credentials_for(SCOPES, MAX_LIFETIME)


def answer(status, body):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", "cache-control": "no-store"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def error(status, message):
    return answer(status, {"error": {"code": status, "message": message}})


def issue_token(event, request_id, caller):
    body = event.get("body") or ""
    try:
        asked = json.loads(body) if body.strip() else {}
    except ValueError:
        return error(400, "The body must be JSON.")
    scopes = sorted(set(asked.get("scopes") or SCOPES))
    if any(scope not in SCOPES for scope in scopes):
        return error(400, "A scope is not among the scopes this function grants.")
    lifetime = asked.get("lifetime_seconds", MAX_LIFETIME)
    if not isinstance(lifetime, int) or not 60 <= lifetime <= MAX_LIFETIME:
        return error(400, f"lifetime_seconds must be from 60 to {MAX_LIFETIME}.")

    started = time.perf_counter()
    credentials = credentials_for(scopes, lifetime)
    hit = credentials.valid
    if not hit:
        credentials.refresh(REQUEST)
    expiry = credentials.expiry.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    print(
        json.dumps(
            {
                "event": "token_issued",
                "request_id": request_id,
                "caller": caller,
                "scopes": scopes,
                "lifetime_seconds": lifetime,
                "cache": "hit" if hit else "miss",
                "latency_ms": (time.perf_counter() - started) * 1000,
            }
        ),
        flush=True,
    )
    return answer(
        200,
        {
            "access_token": credentials.token,
            "token_type": "Bearer",
            "expires_in": max(0, int((expiry - now).total_seconds())),
            "expire_time": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scopes": scopes,
        },
    )


def handle(event, request_id):
    context = event.get("requestContext") or {}
    caller = ((context.get("authorizer") or {}).get("iam") or {}).get("userArn")
    if not caller or not any(fnmatch.fnmatchcase(caller, p) for p in ALLOWED):
        return error(403, "The caller is not authorized to use this function.")
    path = event.get("rawPath", "").rstrip("/")
    method = (context.get("http") or {}).get("method", "GET")
    if path == "/healthz" and method in ("GET", "HEAD"):
        return answer(200, {"status": "ok"})
    if path == "/token" and method in ("GET", "POST"):
        return issue_token(event, request_id, caller)
    return error(404, "No route.")


def main():
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    api = api.split("://", 1)[-1]
    host, _, prefix = api.partition("/")
    prefix = "/" + prefix if prefix else ""
    runtime = http.client.HTTPConnection(host)
    base = f"{prefix}/2018-06-01/runtime/invocation"
    while True:
        runtime.request("GET", f"{base}/next")
        response = runtime.getresponse()
        request_id = response.getheader("lambda-runtime-aws-request-id")
        event = json.loads(response.read())
        try:
            result = handle(event, request_id)
        except Exception as failure:  # noqa: BLE001 - the runtime reports any handler failure
            print(json.dumps({"event": "handler_failed", "error": str(failure)}), flush=True)
            result = error(500, "Internal error.")
        runtime.request(
            "POST",
            f"{base}/{request_id}/response",
            body=json.dumps(result),
            headers={"content-type": "application/json"},
        )
        runtime.getresponse().read()


if __name__ == "__main__":
    sys.exit(main())
