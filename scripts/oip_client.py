"""Talks to a running `zoo serve` with Triton's own HTTP client (PyPI `tritonclient[http]`), unmodified:
liveness, readiness, model metadata, and an FP32 inference request (JSON, no binary extension). Prints the
logits as JSON for zoo-cli/tests/serve.rs to compare with `zoo run`'s.

    python scripts/oip_client.py 127.0.0.1:PORT MODEL INPUT.npy
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, npy = sys.argv[1:4]
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "not live"
    assert client.is_server_ready(), "not ready"
    assert client.is_model_ready(model), "model not ready"
    meta = client.get_model_metadata(model)
    shape = [int(d) for d in meta["inputs"][0]["shape"]]
    x = np.load(npy).astype(np.float32)[None]
    assert list(x.shape[1:]) == shape[1:], (x.shape, shape)
    inp = httpclient.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    out = httpclient.InferRequestedOutput("logits", binary_data=False)
    result = client.infer(model, [inp], outputs=[out], request_id="triton-client")
    logits = result.as_numpy("logits")
    print(json.dumps({"id": result.get_response()["id"], "shape": list(logits.shape), "logits": logits[0].tolist()}))


if __name__ == "__main__":
    main()
