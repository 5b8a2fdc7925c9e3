"""Client configuration from `fleet endpoints`: env lines for OpenAI SDKs, a model_list for LiteLLM.

Deploy side only (never shipped into the gateway image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

KEY_VARIABLE = "FLEET_API_KEY"  # where the generated configs expect the team key: never written into them
LITELLM_NOTE = """\
# LiteLLM proxy config for the fleet (`fleet endpoints --format litellm`).
# LiteLLM polls every backend's /v1/models every 300 s, with no opt-out (litellm issue #42657).
# Through the fleet gateway those polls are answered from the catalog and wake no GPU; pointed at a model
# app directly they would keep a scale-to-zero model awake around the clock (and bill it).
# The key is read from the environment: export {key}=<team key from `fleet keys create`>.
"""


@dataclass(frozen=True)
class Endpoint:
    name: str  # a model name, or "gateway" for the front door itself
    base_url: str  # ends in /v1
    model: str | None  # None for the gateway row (it serves every model)
    via_gateway: bool


def env_name(model: str) -> str:
    return "FLEET_" + re.sub(r"[^A-Za-z0-9]+", "_", model).strip("_").upper() + "_BASE_URL"


def openai_env(endpoints: list[Endpoint]) -> str:
    lines = []
    front = [e for e in endpoints if e.model is None]
    if front:
        lines += ["# the fleet gateway: one base URL for every model; the key is a team key (`fleet keys create`)",
                  f"OPENAI_BASE_URL={front[0].base_url}"]
    else:
        lines.append("# no gateway deployed: one base URL per model; the key is the fleet's API key")
    lines += [f"{env_name(e.model)}={e.base_url}" for e in endpoints if e.model is not None]
    lines.append(f"OPENAI_API_KEY=${{{KEY_VARIABLE}}}")
    return "\n".join(lines) + "\n"


def litellm(endpoints: list[Endpoint]) -> str:
    front = next((e for e in endpoints if e.model is None), None)
    entries = [
        {
            "model_name": e.model,
            "litellm_params": {
                "model": f"openai/{e.model}",
                "api_base": front.base_url if front else e.base_url,
                "api_key": f"os.environ/{KEY_VARIABLE}",
            },
        }
        for e in endpoints
        if e.model is not None
    ]
    return LITELLM_NOTE.format(key=KEY_VARIABLE) + yaml.safe_dump({"model_list": entries}, sort_keys=False)
