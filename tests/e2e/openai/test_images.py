"""/v1/images/generations through the official openai SDK on the tiny Stable Diffusion pipeline."""
from __future__ import annotations

import base64

import httpx
import openai

from tests.conftest import KEY_A, MODEL_ROOT
from tests.support.images import tiny_sd
from tests.support.openai_sdk import sync_client

FAST = {"num_inference_steps": 2, "seed": 3}


def test_b64_images_are_the_jobs_pngs_and_urls_download_with_the_key(api_url: str, client: httpx.Client) -> None:
    sd = str(tiny_sd(MODEL_ROOT))
    with sync_client(api_url, KEY_A) as oai:
        raw = oai.images.with_raw_response.generate(model=sd, prompt="a red fox", n=2, size="64x64",
                                                    response_format="b64_json", extra_body=FAST)
        by_url = oai.images.generate(model=sd, prompt="a red fox", n=1, size="64x64", extra_body=FAST)
    answer = raw.parse()
    pngs = [base64.b64decode(d.b64_json or "") for d in answer.data]
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)
    job_id = raw.headers["x-gpuq-job-id"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["kind"] == "image" and job["params"]["num_images"] == 2 and job["params"]["width"] == 64
    assert client.get(f"/v1/jobs/{job_id}/artifacts/images/image-1.png").content == pngs[1]
    url = by_url.data[0].url or ""
    assert url.startswith(api_url) and client.get(url).content == pngs[0]  # same seed, same first image
    assert httpx.get(url).status_code == 401


def test_bad_size_names_the_parameter(api_url: str) -> None:
    with sync_client(api_url, KEY_A, max_retries=0) as oai:
        try:
            oai.images.generate(model=str(tiny_sd(MODEL_ROOT)), prompt="x", size="huge")  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            assert exc.param == "size"  # type: ignore[attr-defined]
        else:
            raise AssertionError("a size that is not WxH was accepted")
