"""Fault injection for the simulated lane: names, arguments, and what each does to the hardware.

A fault is injected by name, from the command line (`station sim --fault NAME[=N]`), from standard
input while `station sim` runs (`fault NAME[=N]`), or from tests (`SimLane.inject`). Counted faults
apply to the next N items; switches stay as set until set again: 0 is always off, else 1 (on) or
a setting (noise bytes, an exception code, a delay in ms).
"""

from __future__ import annotations

from dataclasses import dataclass

FAULTS: dict[str, str] = {
    "estop": "press the E-stop (the PLC stops the belt at once)",
    "estop-release": "release the E-stop (the station must still reset it)",
    "interlock-open": "open the scanner's interlock (the scanner reports it; the belt must stop)",
    "interlock-close": "close the scanner's interlock",
    "plc-drop": "close the PLC's Modbus server: connections refused",
    "plc-restore": "serve Modbus again on the same port",
    "plc-silent": "1: the PLC keeps connections open but drops every request, writes too, unanswered; 0: off",
    "plc-exception": "CODE: the PLC refuses every request with Modbus exception CODE (4 = device failure); 0: off",
    "plc-slow": "MS: every PLC reply comes MS milliseconds late (requests act on arrival); 0: off",
    "serial-noise": "N random bytes of noise before every scanner frame (0 = off)",
    "serial-noise-rate": "N random bytes per second on the scanner line, whenever it is idle (0 = off)",
    "split-frames": "1: the scanner writes frames in random small pieces; 0: whole",
    "scanner-unplug": "1: pull the scanner's serial cable (its port disappears); 0: plug it back in",
    "barcode-unplug": "1: pull the barcode reader's serial cable (its port disappears); 0: plug it back in",
    "scanner-silent": "the next N scans start but never finish (no SCAN_DONE)",
    "image-missing": "the next N scans name an image file that is never written",
    "image-corrupt": "the next N scans write a bad image file, in turn: truncated, 0 bytes, a 60000 x 60000 header, PNG content named .xde",
    "jam": "the next N items stick between the tunnel and the gate and never reach it",
    "noread": "the barcode reader fails to read the next N items",
    "touching": "the next N items are put on the belt touching the item before them",
    "close": "the next N items are put on the belt 10 mm behind the item before them: closer than the gate can separate",
    "plc-write-lag": "MS: the PLC applies every write MS milliseconds after it arrives (replies stay prompt); 0: off",
    "outage-at-entry": "MS: the PLC link goes silent for MS milliseconds as the next item reaches the entry eye",
    "encoder-wrap": "MM: the encoder jumps to MM mm short of its 2**32 wrap (at start: no jump, the wrap comes MM mm later)",
    "encoder-jump": "MM: the encoder jumps back MM mm (a counter preset, a PLC restart)",
    "disk-full": "KB: fill the station's data folder's filesystem until KB KiB are left (a small filesystem only); "
                 "0: free it again",
}
SWITCHES = {"serial-noise", "serial-noise-rate", "split-frames", "plc-silent", "plc-exception", "plc-slow",
            "plc-write-lag", "disk-full", "scanner-unplug", "barcode-unplug"}
COUNTED = {"scanner-silent", "image-missing", "image-corrupt", "jam", "noread", "touching", "close"}
MAXIMUM = {"scanner-unplug": 1, "barcode-unplug": 1, "plc-exception": 255, "encoder-wrap": 2**32 - 1, "encoder-jump": 2**32 - 1}


class FaultError(ValueError):
    """An unknown fault or a bad argument; the message lists what is known."""


@dataclass(frozen=True)
class Fault:
    name: str
    arg: int = 1

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`NAME` or `NAME=N`."""
        name, _, arg = text.strip().partition("=")
        if name not in FAULTS:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        try:
            value = int(arg) if arg else 1
        except ValueError as err:
            raise FaultError(f"fault {name}: argument {arg!r} is not a whole number") from err
        if value < 0:
            raise FaultError(f"fault {name}: argument must be 0 or more")
        if value > MAXIMUM.get(name, value):
            raise FaultError(f"fault {name}: argument must be at most {MAXIMUM[name]}")
        return cls(name, value)
