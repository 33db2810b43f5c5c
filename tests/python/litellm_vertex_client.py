"""LiteLLM with a vertex_ai/ model and no Google configuration at all: it finds credentials
and the project through Application Default Credentials, that is through the metadata proxy.

Run with GCE_METADATA_HOST and GCE_METADATA_IP naming the proxy and VERTEX_BASE_URL naming
the (emulated) Vertex AI endpoint; prints one JSON object for the test to check.
"""

import json
import os
import sys

import litellm


def main():
    response = litellm.completion(
        model="vertex_ai/gemini-2.5-flash",
        messages=[{"role": "user", "content": "Say hello in one word."}],
        api_base=os.environ["VERTEX_BASE_URL"],
    )
    print(
        json.dumps(
            {
                "content": response.choices[0].message.content,
                "model": response.model,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
