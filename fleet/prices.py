"""The one price table: what Modal charges per second of a GPU, of a CPU core and of memory.

Used where fleet must put a number on money without Modal's bill: the cost of a redeploy in `fleet plan`,
the cheapest GPU in `fleet new`, and `fleet cost` when no credentials are there to ask Modal's billing
rates. Modal bills per second; the table is per hour because that is how prices are published. When Modal's
own rates are available (`modal billing rates`), they win over this table.
"""

from __future__ import annotations

from dataclasses import dataclass

# When these figures were read, and from where. Re-read them (`modal billing rates`) and move the date.
PRICES_READ_ON = "2026-11-29"
PRICES_SOURCE = (
    "third-party figures for Modal's 2026 prices (shared/facts.md: H100, A100-80GB, L40S, L4, B200) and "
    "Modal's published pricing page for the other types; `modal billing rates` gives the workspace's real ones"
)

# USD per GPU per hour, by Modal GPU type (the names the catalog's gpu.type accepts).
GPU_USD_PER_HOUR: dict[str, float] = {
    "T4": 0.59,
    "L4": 0.80,
    "A10": 1.10,
    "L40S": 1.95,
    "A100": 2.10,
    "A100-40GB": 2.10,
    "A100-80GB": 2.50,
    "RTX-PRO-6000": 3.03,
    "H100": 3.95,
    "H100!": 3.95,
    "H200": 4.54,
    "B200": 6.25,
    "B200+": 6.25,
}
CPU_CORE_USD_PER_HOUR = 0.0473  # per physical core
MEMORY_GIB_USD_PER_HOUR = 0.0080


@dataclass(frozen=True)
class GpuPrice:
    gpu_type: str
    count: int
    usd_per_hour: float  # for all `count` GPUs together

    @property
    def usd_per_second(self) -> float:
        return self.usd_per_hour / 3600


def gpu_price(gpu_type: str, count: int = 1) -> GpuPrice:
    """The hourly price of `count` GPUs of `gpu_type` (a KeyError names a type the table lacks: a bug,
    since the schema only admits types this table knows; a test keeps the two in step)."""
    return GpuPrice(gpu_type, count, GPU_USD_PER_HOUR[gpu_type] * count)


def gpu_cost_usd(gpu_type: str, count: int, seconds: float) -> float:
    """Dollars for `seconds` of `count` GPUs, billed per second like Modal."""
    return gpu_price(gpu_type, count).usd_per_second * seconds


def price_note() -> str:
    """A one-line provenance for any figure computed from the table."""
    return f"prices of {PRICES_READ_ON} (fleet/prices.py); `modal billing rates` has your workspace's"
