"""Resources in one place: the compute device (the build config comes from mm_assets.config)."""

from __future__ import annotations

import dataclasses

import dagster as dg
import torch

from mm_core.config import BuildConfig, RuntimeConfig
from mm_core.device import resolve_device, resolve_precision


class DeviceResource(dg.ConfigurableResource):
    """Where models run: ``auto`` picks cuda when present, else cpu."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    num_workers: int = 0  # decode threads per encoding step (0: decode in the step thread)

    def resolved(self) -> tuple[torch.device, str]:
        dev = resolve_device(self.device)
        return dev, resolve_precision(self.precision, dev)

    def describe(self) -> dict[str, str]:
        dev, prec = self.resolved()
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        return {"device": str(dev), "device_name": name, "precision": prec}

    def apply(self, cfg: BuildConfig) -> BuildConfig:
        """A copy of the build config that runs with this resource's settings."""
        runtime = RuntimeConfig(self.device, self.precision, self.batch_size, self.num_workers)
        return dataclasses.replace(cfg, runtime=runtime)
