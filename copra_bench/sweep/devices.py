"""``sweep --devices 0,1,2,3 --per-run N``: each run gets N GPUs of its own through ``CUDA_VISIBLE_DEVICES``.

The devices are split into ``len(devices) // per_run`` slots of ``per_run`` consecutive devices; a run takes a free
slot when it starts and gives it back when its process ends, so at most one run uses a device at any time. A run
sees its slot's devices renumbered from 0 (that is what ``CUDA_VISIBLE_DEVICES`` does), so ``--trainer.devices N``
(added by the sweep when ``per_run`` > 1 and the sweep does not set ``trainer.devices`` itself) uses all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from copra_bench.sweep.spec import SweepError

TAG_DEVICES = "sweep.devices"
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def parse_devices(text: str) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]``; a bad list is a :class:`SweepError` saying what to write."""
    items = [item.strip() for item in str(text).split(",")]
    if not items or any(not item for item in items):
        raise SweepError(f"--devices {text!r}: write GPU indices separated by commas, e.g. --devices 0,1,2,3")
    bad = [item for item in items if not item.isdigit()]
    if bad:
        raise SweepError(f"--devices {text!r}: {', '.join(repr(b) for b in bad)} is not a GPU index (a non-negative "
                         "integer, as nvidia-smi numbers them), e.g. --devices 0,1,2,3")
    devices = [int(item) for item in items]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise SweepError(f"--devices {text!r}: GPU {', '.join(map(str, twice))} is listed twice (two runs would "
                         "share it); list each GPU once")
    return devices


@dataclass
class DevicePool:
    """Slots of ``per_run`` devices each (see the module docstring). ``devices`` empty: one slot, no devices."""

    devices: list[int]
    per_run: int = 1
    slots: list[tuple[int, ...]] = field(init=False)
    free: list[tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        if self.per_run < 1:
            raise SweepError(f"--per-run {self.per_run}: each run needs at least one GPU")
        if self.devices and self.per_run > len(self.devices):
            raise SweepError(f"--per-run {self.per_run} is more than the {len(self.devices)} GPU(s) of --devices "
                             f"{','.join(map(str, self.devices))}: list more GPUs or lower --per-run")
        n = len(self.devices) // self.per_run
        self.slots = [tuple(self.devices[i * self.per_run:(i + 1) * self.per_run]) for i in range(n)]
        self.free = list(self.slots)

    @property
    def size(self) -> int:
        """Runs at once."""
        return len(self.slots)

    @property
    def unused(self) -> list[int]:
        """Devices left out (the list is not a multiple of ``per_run``)."""
        used = {d for slot in self.slots for d in slot}
        return [d for d in self.devices if d not in used]

    def take(self) -> tuple[int, ...] | None:
        """A free slot (lowest devices first), or None when every slot is busy."""
        return self.free.pop(0) if self.free else None

    def give_back(self, slot: tuple[int, ...]) -> None:
        if slot in self.free or slot not in self.slots:
            raise RuntimeError(f"slot {slot} given back twice or never taken")  # a bug of the runner, not input
        self.free.append(slot)
        self.free.sort(key=self.slots.index)


def visible(slot: tuple[int, ...]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value of a slot (``"2,3"``)."""
    return ",".join(str(d) for d in slot)
