"""What the lane core consumes (events) and what it asks the runtime to do (commands).

All are frozen values. Times are `time.monotonic()` seconds supplied by the caller; the core never
reads a clock, so tests drive it with virtual time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from station.domain import Detected, Reason
from station.ead.record import EadRecord

# ---- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One PLC poll: the profile's values by name (encoder_mm, eyes, estop_active, fault_code, gate_clear...)."""

    t: float
    values: Mapping[str, bool | int | float]


@dataclass(frozen=True)
class PlcLink:
    t: float
    up: bool
    detail: str = ""


@dataclass(frozen=True)
class BarcodeScanned:
    t: float
    code: str | None  # None: the reader's no-read


@dataclass(frozen=True)
class ScanStarted:
    t: float
    scan_id: str


@dataclass(frozen=True)
class ScanDone:
    t: float
    scan_id: str
    path: str
    sha256: str


@dataclass(frozen=True)
class InterlockChanged:
    t: float
    open: bool


@dataclass(frozen=True)
class InferenceDone:
    t: float
    track_id: int
    detections: tuple[Detected, ...]
    model_hash: str | None = None  # the model that looked at this image (swaps happen between images)


@dataclass(frozen=True)
class InferenceFailed:
    t: float
    track_id: int
    reason: Reason  # IMAGE_ERROR, INFERENCE_TIMEOUT, INFERENCE_ERROR


@dataclass(frozen=True)
class EadResolved:
    t: float
    track_id: int
    found: bool
    version: int | None = None
    record: EadRecord | None = None
    findings: tuple[Reason, ...] = ()  # the record's own quality checks (station.ead.checks.check_record)
    customs: Reason | None = None  # a customs referral in force for the item (as CustomsInstructed gives it)


@dataclass(frozen=True)
class EadArrived:
    """A declaration (or a newer version of one) was stored while its item may still be on the belt."""

    t: float
    record: EadRecord
    findings: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class CustomsInstructed:
    """Customs holds an item, forbids loading it or asks for it to be screened (station/customs.py): an
    item with this S10 id still on the belt goes to INSPECT, whatever the detector says."""

    t: float
    item_id: str
    reason: Reason  # CUSTOMS_HOLD, CUSTOMS_DO_NOT_LOAD or CUSTOMS_SCREEN, naming the instruction


@dataclass(frozen=True)
class Operator:
    t: float
    action: Literal["start", "stop", "reset", "maintenance"]


@dataclass(frozen=True)
class Tick:
    t: float


@dataclass(frozen=True)
class ModelChanged:
    """A model was swapped in (its hash), or none is usable (None): the lane runs MANUAL_ONLY."""

    t: float
    model_hash: str | None


@dataclass(frozen=True)
class StoreFull:
    """The store cannot take more (disk full, or below its free-space floor), or can again."""

    t: float
    full: bool
    detail: str = ""


@dataclass(frozen=True)
class ReaderLink:
    """The scanner or the barcode reader became usable, or stopped being usable (absent, unplugged, silent)."""

    t: float
    reader: Literal["scanner", "barcode"]
    up: bool
    detail: str = ""


@dataclass(frozen=True)
class AlarmCleared:
    """The operator cleared an active alarm (the runtime checked the core's `holds` first)."""

    t: float
    code: str


Event = (Snapshot | PlcLink | BarcodeScanned | ScanStarted | ScanDone | InterlockChanged | InferenceDone
         | InferenceFailed | EadResolved | EadArrived | CustomsInstructed | Operator | Tick | ModelChanged | StoreFull
         | ReaderLink | AlarmCleared)


# ---- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteOutput:
    name: str
    value: bool | int | float


@dataclass(frozen=True)
class SetHeartbeat:
    """Keep (or stop) writing the PLC heartbeat. Stopping it makes the PLC's watchdog stop the belt."""

    on: bool


@dataclass(frozen=True)
class RunInference:
    track_id: int
    path: str
    sha256: str


@dataclass(frozen=True)
class LookUpEad:
    track_id: int
    item_id: str


@dataclass(frozen=True)
class Alarm:
    code: str
    detail: str


@dataclass(frozen=True)
class ItemRouted:
    """An item passed the gate: the runtime stores it and its messages in one transaction."""

    track_id: int
    item_id: str | None
    barcode: str | None
    scan_id: str | None
    image_path: str | None
    image_sha256: str | None
    decision: Literal["CLEAR", "INSPECT"]
    # MISSING: it never reached the gate; UNCONFIRMED: it passed while the PLC link was down, or was on the
    # belt when the station stopped (reported, not lost). A CLEAR decision with reasons: the gate carried
    # the item's CLEAR before those problems arose, too late to recall it.
    routed: Literal["CLEAR", "INSPECT", "MISSING", "UNCONFIRMED"]
    score: float
    reasons: tuple[Reason, ...]
    detections: tuple[Detected, ...]
    ead_status: Literal["found", "missing", "not_looked_up"]
    ead_version: int | None
    rules_version: str
    model_hash: str | None  # None: no model looked at the image (MANUAL_ONLY, no image, image error)
    weight_kg: float | None  # what the checkweigher read; None: no scale, or not weighed
    explanation: str  # the decision's evidence and rule trace as JSON (`station rules explain`)
    ead_findings: tuple[Reason, ...]  # the declaration's data-quality findings, whatever the decision
    image_ready_t: float | None  # when the scanner said the image was written
    decided_t: float | None


Command = WriteOutput | SetHeartbeat | RunInference | LookUpEad | Alarm | ItemRouted
