"""The price table knows every GPU type the schema admits, and bills per second."""

from __future__ import annotations

import json
from importlib import resources

from fleet.prices import GPU_USD_PER_HOUR, gpu_cost_usd, gpu_price


def test_every_schema_gpu_type_has_a_price():
    schema = json.loads(resources.files("fleet.schema").joinpath("model.schema.json").read_text())
    types = set(schema["properties"]["gpu"]["properties"]["type"]["enum"])
    assert types == set(GPU_USD_PER_HOUR)


def test_cost_is_per_second_and_per_gpu():
    assert gpu_price("H100", 2).usd_per_hour == 2 * GPU_USD_PER_HOUR["H100"]
    assert abs(gpu_cost_usd("A100-80GB", 1, 3600) - 2.50) < 1e-9
    assert abs(gpu_cost_usd("L4", 4, 90) - 4 * 0.80 * 90 / 3600) < 1e-9
