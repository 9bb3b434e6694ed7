"""Bad prompts over HTTP: a 422 whose detail names the field, never a 500 (hardening items 3, 5, 6)."""
from __future__ import annotations

import json

import pytest

from api_helpers import API, TXT2IMG_BASE

pytestmark = pytest.mark.timeout(120)

HIRES = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5, "hr_second_pass_steps": 1}


def post(client, **changes):
    return client.post(f"{API}/txt2img", content=json.dumps({**TXT2IMG_BASE, **HIRES, **changes}),
                       headers={"content-type": "application/json"})


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_empty_prompt_list_is_422_naming_the_field(client, field):
    r = post(client, **{field: []})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field} is an empty list")


def test_runaway_nesting_is_422_naming_the_field(client):
    r = post(client, prompt="(" * 9999 + "x" + ")" * 9999)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "InvalidParameter" and "prompt nests brackets 9999 levels deep" in r.json()["detail"]


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt"])
def test_unpaired_surrogate_is_422_naming_the_field(client, field):
    r = post(client, **{field: "\ud800x"})  # json.dumps writes the escape "\ud800", as a client may
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json())


def test_bounded_runaway_weight_makes_an_image(client):
    r = post(client, prompt="(" * 100 + "x" + ")" * 100, negative_prompt="(x:" + "9" * 400 + ")", seed=1)
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1
