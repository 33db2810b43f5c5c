"""An unmodified Google client on AWS: Application Default Credentials through the metadata
proxy, then one Gemini call with the token.

Run with GCE_METADATA_HOST and GCE_METADATA_IP naming the proxy, and VERTEX_BASE_URL naming
the (emulated) Vertex AI endpoint; prints one JSON object for the test to check.
"""

import json
import os
import sys

import google.auth
import google.auth.transport.requests
from google.auth.compute_engine import credentials as compute_engine

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def main():
    credentials, project = google.auth.default(scopes=[CLOUD_PLATFORM])
    session = google.auth.transport.requests.AuthorizedSession(credentials)

    location = os.environ.get("VERTEX_LOCATION", "us-central1")
    model = os.environ.get("VERTEX_MODEL", "gemini-2.5-flash")
    url = (
        f"{os.environ['VERTEX_BASE_URL']}/v1/projects/{project}/locations/{location}"
        f"/publishers/google/models/{model}:generateContent"
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello in one word."}]}]}
    response = session.post(url, json=body, timeout=30)

    print(
        json.dumps(
            {
                "credentials": type(credentials).__module__ + "." + type(credentials).__name__,
                "is_compute_engine": isinstance(credentials, compute_engine.Credentials),
                "project": project,
                "service_account": credentials.service_account_email,
                "token": credentials.token,
                "universe_domain": credentials.universe_domain,
                "vertex_status": response.status_code,
                "vertex_answer": response.json(),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
