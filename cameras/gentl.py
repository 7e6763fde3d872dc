"""GenTL producers (.cti) loaded through harvesters, shared by this process's GenICam cameras.

A GenTL producer can be loaded only once per process (a second Harvester on the same .cti sees
no device), so cameras share one Harvester per producer file (`GenTLProducer`), reference-counted:
the last camera to let go resets it. Opening a device re-enumerates when it is not (or no longer)
in the list, without destroying the acquirers other cameras have open on the same producer.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any, ClassVar

import genicam
from harvesters.core import Harvester, ImageAcquirer

from edge.errors import CameraFatalError, CameraLostError

log = logging.getLogger(__name__)


def bundled_cti() -> Path:
    """The GenTL producer shipped inside the `genicam` wheel (the Viky simulator, `viky.cti`)."""
    folder = Path(genicam.__file__).resolve().parent
    found = sorted(folder.glob("*.cti"))
    if not found:
        raise CameraFatalError(
            f"no GenTL producer (.cti) is bundled with the genicam package in {folder}; "
            "set `cti:` to your camera vendor's producer file"
        )
    return found[0]


def _info(device_info: Any, attr: str) -> str | None:
    try:
        value = getattr(device_info, attr)
    except Exception:  # genicam NotAvailableException for fields a producer does not fill
        return None
    return None if value is None else str(value)


def _describe_device(device_info: Any) -> str:
    name, ident = _info(device_info, "display_name"), _info(device_info, "id_")
    label = name or ident or "device"
    if ident and ident not in label:
        label = f"{label} [{ident}]"
    serial = _info(device_info, "serial_number")
    return f"{label}, serial {serial}" if serial else label


def _call_keeping_sigint(fn: Any, *args: Any) -> Any:
    """harvesters' ImageAcquirer replaces the SIGINT handler when created in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    previous = signal.getsignal(signal.SIGINT)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGINT, previous)


class GenTLProducer:
    """One Harvester per GenTL producer file, shared (reference-counted) by this process's cameras."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _open: ClassVar[dict[str, GenTLProducer]] = {}

    def __init__(self, cti: str) -> None:
        self.cti = cti
        self.harvester = Harvester()
        self.users = 0
        self.acquirers: list[ImageAcquirer] = []
        self.lock = threading.RLock()
        try:
            self.harvester.add_file(cti, check_existence=True, check_validity=True)
            self.harvester.update()
        except Exception as exc:
            self.harvester.reset()
            raise CameraFatalError(f"cannot load GenTL producer {cti}: {exc}") from exc

    @classmethod
    def acquire(cls, cti: Path) -> GenTLProducer:
        key = str(cti.resolve())
        with cls._lock:
            prod = cls._open.get(key)
            if prod is None:
                prod = cls._open[key] = GenTLProducer(key)
            prod.users += 1
            return prod

    def release(self) -> None:
        with GenTLProducer._lock:
            self.users -= 1
            if self.users > 0:
                return
            GenTLProducer._open.pop(self.cti, None)
        with self.lock:
            try:
                self.harvester.reset()
            except Exception:
                log.exception("resetting the harvester of %s failed", self.cti)

    def _refresh(self) -> None:
        """Re-enumerate devices; without other open acquirers a full update, else per interface."""
        h = self.harvester
        if not self.acquirers:
            h.update()
            return
        # Harvester.update() would destroy the other cameras' acquirers: refresh the device
        # lists of the open interfaces instead (harvesters has no public call for this).
        from harvesters.core import DeviceInfo

        try:
            fresh = []
            for iface in list(h._ifaces):
                iface.module.update_device_info_list(h.timeout_for_update or 1000)
                for d in iface.module.device_info_list:
                    fresh.append(DeviceInfo(module=d, parent=iface))
            h._device_info_list[:] = fresh
        except Exception as exc:  # best effort: keep the list we had
            log.debug("device refresh on %s failed: %s", self.cti, exc)

    def _find(self, device: str | int | None) -> int | None:
        infos = self.harvester.device_info_list
        if device is None:
            return 0 if infos else None
        if isinstance(device, int):
            return device if 0 <= device < len(infos) else None
        for i, d in enumerate(infos):
            if device in (_info(d, "serial_number"), _info(d, "id_"), _info(d, "user_defined_name")):
                return i
        return None

    def create(self, device: str | int | None) -> tuple[ImageAcquirer, str]:
        with self.lock:
            index = self._find(device)
            if index is None:
                self._refresh()
                index = self._find(device)
            infos = self.harvester.device_info_list
            if index is None:
                known = "; ".join(f"[{i}] {_describe_device(d)}" for i, d in enumerate(infos)) or "none"
                want = "any device" if device is None else f"device {device!r}"
                raise CameraLostError(f"GenTL producer {Path(self.cti).name}: {want} not found (devices: {known})")
            desc = _describe_device(infos[index])
            try:
                ia = _call_keeping_sigint(self.harvester.create, index)
            except Exception as first:  # a stale entry (unplugged and back), or in use elsewhere
                self._refresh()
                index = self._find(device)
                if index is None:
                    raise CameraLostError(f"cannot open {desc}: {first}") from first
                desc = _describe_device(self.harvester.device_info_list[index])
                try:
                    ia = _call_keeping_sigint(self.harvester.create, index)
                except Exception as exc:
                    raise CameraLostError(f"cannot open {desc}: {exc}") from exc
            self.acquirers.append(ia)
            return ia, desc

    def destroy(self, ia: ImageAcquirer) -> None:
        with self.lock:
            try:
                ia.destroy()
            finally:
                if ia in self.acquirers:
                    self.acquirers.remove(ia)
                acquirers = self.harvester.image_acquirers
                if ia in acquirers:
                    acquirers.remove(ia)
