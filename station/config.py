"""Station configuration: one TOML file, one pydantic model per section.

Every section forbids unknown keys, so a typo stops the start instead of being ignored. `load_config`
turns pydantic's errors into `ConfigError`, whose message names the file, the key path and, where the
key is written in the file, its line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.links import RtuLink, TcpLink


class ConfigError(Exception):
    """The configuration cannot be used. The message is meant for the person who wrote the file."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: object, info: ValidationInfo) -> object:
        """No NUL in any text (a path with one fails only when opened), and no true/false for a number
        (pydantic would take them as 1 and 0: `port = false` would be a random port)."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("holds a NUL character")
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


Mm = Annotated[float, Field(ge=-10_000, le=100_000)]


class StationSection(Section):
    site: str = Field("SITE-1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Site (mail-processing centre) id; part of every MQTT topic.")
    lane: str = Field("lane-1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Lane id within the site; part of every MQTT topic.")


class LaneSection(Section):
    """Belt geometry in millimetres from the entry photo-eye, and the timing the lane logic keeps."""

    belt_speed_mm_s: float = Field(1000.0, gt=0, le=3000, description="Belt speed set-point.")
    scale_mm: Mm = Field(100.0, description="End of the checkweigher's weigh conveyor: an item is weighed as its "
                                            "trailing edge leaves it.")
    barcode_mm: Mm = Field(250.0, description="Barcode reader position.")
    tunnel_start_mm: Mm = Field(500.0, description="Scanner tunnel entrance.")
    tunnel_end_mm: Mm = Field(1300.0, description="Scanner tunnel exit (exit photo-eye).")
    gate_mm: Mm = Field(2500.0, description="Divert gate (gate photo-eye).")
    gate_margin_mm: float = Field(120.0, ge=0, le=2000,
                                  description="A decision must be on the gate output this far before the gate.")
    read_window_mm: float = Field(150.0, gt=0, le=2000,
                                  description="How far from the expected position a barcode or scan may be bound "
                                              "to an item.")
    min_gap_mm: float = Field(30.0, ge=0, le=2000,
                              description="Empty belt the divert gate needs between two items to route them apart; "
                                          "closer items both go to INSPECT (ITEMS_TOO_CLOSE). The gap is measured "
                                          "at the entry eye rounding down, by up to the belt's travel in two polls.")
    max_item_mm: float = Field(800.0, gt=0, le=5000,
                               description="Anything longer under the entry eye is treated as touching items "
                                           "(INSPECT).")
    auto_start: bool = Field(True, description="Start the belt as soon as the PLC answers (always on with --simulate).")

    @model_validator(mode="after")
    def _ordered(self) -> LaneSection:
        if not (0 < self.barcode_mm < self.tunnel_start_mm < self.tunnel_end_mm < self.gate_mm):
            raise ValueError("positions must increase: 0 < barcode_mm < tunnel_start_mm < tunnel_end_mm < gate_mm")
        if not 0 < self.scale_mm < self.tunnel_start_mm:
            raise ValueError("scale_mm must lie between the entry eye (0) and tunnel_start_mm")
        return self


class PlcTcp(Section):
    type: Literal["tcp"] = "tcp"
    host: str = Field("127.0.0.1", description="Modbus TCP host of the PLC.")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port.")

    def link(self) -> TcpLink:
        return TcpLink(self.host, self.port)


class PlcRtu(Section):
    type: Literal["rtu"]
    port: str = Field(description="Serial device of the RS-485 adapter, e.g. /dev/ttyUSB2.")
    baudrate: int = Field(19200, gt=0)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def link(self) -> RtuLink:
        return RtuLink(self.port, self.baudrate, self.parity, self.stopbits, self.bytesize)


def _link_type(value: object) -> str:
    """`[plc.link]`'s kind: its `type`, "tcp" when left out."""
    return str(value.get("type", "tcp") if isinstance(value, dict) else getattr(value, "type", "tcp"))


class PlcSection(Section):
    profile: str = Field("default", description="Register-map profile: a name in drivers/profiles or a file path.")
    link: Annotated[Annotated[PlcTcp, Tag("tcp")] | Annotated[PlcRtu, Tag("rtu")],
                    Discriminator(_link_type)] = Field(
        default_factory=PlcTcp,
        description="How to reach the PLC: type = 'tcp' (host, port) or 'rtu' (port, baudrate...).")
    poll_interval_s: float = Field(0.02, gt=0, le=1, description="Time between grouped polls.")
    timeout_s: float = Field(0.5, gt=0, le=10, description="Per-request timeout.")


class ScannerSection(Section):
    port: str = Field("/dev/ttyUSB0", description="Serial device of the X-ray scanner.")
    baudrate: int = Field(115200, gt=0)
    spool_dir: Path = Field(Path("spool"), description="Folder the scanner writes images into (relative to data_dir).")
    max_image_mb: float = Field(64.0, gt=0, le=4096,
                                description="Largest scan file the station reads from the spool (MiB); a bigger one "
                                            "is an IMAGE_ERROR.")


class BarcodeSection(Section):
    port: str = Field("/dev/ttyUSB1", description="Serial device of the barcode reader.")
    baudrate: int = Field(9600, gt=0)


class ModelSection(Section):
    path: Path | None = Field(None,
                              description="Model folder (model.onnx + manifest.json); empty = the packaged default.")
    threads: int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads.")
    timeout_s: float = Field(2.0, gt=0, le=60, description="Per-image inference timeout; a late image goes to INSPECT.")


class StorageSection(Section):
    data_dir: Path = Field(Path("var"), description="Database, images and spool live here.")
    min_free_mb: float = Field(64.0, ge=0, le=1_000_000,
                               description="Below this much free space in data_dir the lane pauses (DISK_FULL) "
                                           "until space returns, before the store ever sees a full disk; 0 = off.")
    warn_free_mb: float = Field(256.0, ge=0, le=1_000_000,
                                description="Below this much free space in data_dir the DISK_LOW alarm is raised "
                                            "(cleared 10 % above it) and retention runs at once, deleting the oldest "
                                            "deletable scans until space is back; above min_free_mb; 0 = off.")
    keep_images_days: float = Field(30.0, ge=0, le=36_500,
                                    description="Scans older than this are deleted (the item's record stays, with "
                                                "the scan's SHA-256); never a protected item's. 0 = kept forever.")
    keep_items_days: float = Field(365.0, ge=0, le=36_500,
                                   description="Item records (and declarations no record needs) older than this are "
                                               "deleted; never a protected item's. At least keep_images_days; "
                                               "0 = kept forever.")
    max_disk_share: float = Field(0.8, gt=0, le=1,
                                  description="Scans and the store together use at most this share of data_dir's "
                                              "filesystem: above it the oldest deletable scans go first, then the "
                                              "oldest deletable records. 1 = no limit but the disk.")
    retention_interval_min: float = Field(10.0, ge=0.1, le=24 * 60,
                                          description="Minutes between two retention passes (the first 30 s after "
                                                      "the start; one at once below warn_free_mb or at DISK_FULL).")

    @model_validator(mode="after")
    def _floors_and_ages(self) -> StorageSection:
        if self.warn_free_mb and self.warn_free_mb <= self.min_free_mb:
            raise ValueError("warn_free_mb (the DISK_LOW warning) must be above min_free_mb (the DISK_FULL pause), "
                             "or 0 for no warning")
        if self.keep_items_days and not 0 < self.keep_images_days <= self.keep_items_days:
            raise ValueError("keep_items_days must be at least keep_images_days (a record outlives its scan), "
                             "or 0 to keep records forever")
        return self


CommandName = Literal["pause", "resume", "rebirth", "model-load", "rules-reload"]  # cmd/{name}: station/commands.py
COMMANDS: tuple[str, ...] = get_args(CommandName)


class MqttSection(Section):
    host: str = Field("", description="Broker host; empty keeps every message in the outbox.")
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version: 5 (replies carry the response topic "
                                                             "and correlation data), or 3.1.1 for brokers without 5.")
    username: str | None = None
    password: str | None = None
    tls: bool = Field(False, description="Connect with TLS, verifying the broker's certificate and host name.")
    ca_file: Path | None = Field(None, description="CA bundle for TLS, if not the system one.")
    cert_file: Path | None = Field(None, description="This lane's client certificate (PEM), with key_file.")
    key_file: Path | None = Field(None, description="This lane's client private key (PEM), with cert_file.")
    tls_insecure: bool = Field(False, description="Do not check that the broker's certificate names `host` "
                                                  "(logged at WARNING at every connect). Never on by default.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 86_400, ge=0, le=2**32 - 1,
                                  description="MQTT 5: how long the broker keeps this lane's session (and the "
                                              "declarations and instructions sent to it) while it is away.")
    client_id: str = Field("", description="Empty derives 'station-{site}-{lane}'.")
    ead_quality_interval_s: float = Field(60.0, ge=1, le=86_400,
                                          description="How often the EAD data-quality summary is published.")
    commands: dict[str, list[CommandName]] = Field(
        default_factory=dict,
        description="Who may send which command on cmd/{name}: issuer -> command names. Empty: no command is "
                    "accepted from anyone.")
    command_max_ttl_s: float = Field(300.0, gt=0, le=86_400,
                                     description="A command whose expires_at lies further ahead is refused.")

    @field_validator("ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_settings(self) -> MqttSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both, or neither")
        if not self.tls and (self.tls_insecure or self.cert_file is not None or self.ca_file is not None):
            raise ValueError("ca_file, cert_file, key_file and tls_insecure need tls = true")
        return self


class WebSection(Section):
    """The operator console the daemon serves (station/console/)."""

    enabled: bool = Field(True, description="Serve the console.")
    host: str = Field("127.0.0.1", min_length=1,
                      description="Bind address; 127.0.0.1 keeps it on this box (use TLS before binding wider).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one (tests).")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) for HTTPS; with tls_key.")
    tls_key: Path | None = Field(None, description="PEM private key for HTTPS; with tls_cert.")
    session_hours: float = Field(8.0, gt=0, le=24, description="A login lasts at most this long (one shift).")
    idle_minutes: float = Field(30.0, gt=0, le=24 * 60, description="A login unused this long ends.")
    login_attempts: int = Field(5, ge=1, le=100,
                                description="Failed logins allowed per account and per address in 5 minutes.")
    metrics: bool = Field(True, description="Serve /metrics for Prometheus, without a login: counts, states and "
                          "the model's hash, never an item id or a name. false: no /metrics.")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        return self


class SimulatorSection(Section):
    seed: int = Field(1, description="Seed of the item stream; the same seed repeats a run exactly.")
    item_rate_per_s: float = Field(1.0, gt=0, le=10,
                                   description="Items put on the belt per second (when space allows).")
    threat_share: float = Field(0.2, ge=0, le=1)
    noread_share: float = Field(0.03, ge=0, le=1)
    invalid_s10_share: float = Field(0.03, ge=0, le=1)
    ead_missing_share: float = Field(0.05, ge=0, le=1)
    ead_late_share: float = Field(0.05, ge=0, le=1,
                                  description="Declarations central sends only after the item passed the gate "
                                              "(with a broker).")
    ead_defect_share: float = Field(0.1, ge=0, le=1,
                                    description="Declarations with one seeded defect (simulator/ead_feed.py).")
    unreadable_image_share: float = Field(0.0, ge=0, le=1,
                                          description="Scans written as a corrupt file (fault injection).")


class RulesSection(Section):
    """The risk rules (station/rules/default.toml documents the language; `station rules check` checks a file)."""

    path: Path | None = Field(None, description="Rules file (TOML); empty = the packaged default rules.")
    overrides: Path | None = Field(None, description="This site's overrides of the rules file (TOML); empty = none.")

    @field_validator("path", "overrides", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class Config(Section):
    station: StationSection = StationSection()
    lane: LaneSection = LaneSection()
    plc: PlcSection = PlcSection()
    scanner: ScannerSection = ScannerSection()
    barcode: BarcodeSection = BarcodeSection()
    model: ModelSection = ModelSection()
    storage: StorageSection = StorageSection()
    mqtt: MqttSection = MqttSection()
    web: WebSection = WebSection()
    simulator: SimulatorSection = SimulatorSection()
    rules: RulesSection = RulesSection()

    @property
    def spool_dir(self) -> Path:
        return self.storage.data_dir / self.scanner.spool_dir


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML file; None gives the built-in defaults. Raises ConfigError."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 (byte {err.start})") from err
    try:
        raw = tomllib.loads(text)
    except (ValueError, RecursionError) as err:  # TOMLDecodeError is a ValueError; so is a 5000-digit integer's
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_config(raw, source=str(path), text=text)


def parse_config(raw: dict[str, Any], source: str = "<config>", text: str = "") -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for i, p in enumerate(e["loc"])  # not the link's tag: [plc.link] port
                           if not (i and e["loc"][i - 1] == "link" and p in ("tcp", "rtu"))) or "(top level)"
            where = line_of(text, e["loc"])
            at = f":{where}" if where else ""
            problem = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problem = problem.replace("\r", "\\r").replace("\n", "\\n")  # one problem, one line
            lines.append(f"{source}{at}: {key}: {problem}")
        raise ConfigError("\n".join(lines)) from err
    # Relative data paths are relative to the config file's folder, so a config works from any cwd.
    if source != "<config>" and not config.storage.data_dir.is_absolute():
        data_dir = Path(source).parent / config.storage.data_dir
        config = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": data_dir})})
    if source != "<config>":
        here = Path(source).parent
        rules = {key: here / value for key, value in config.rules if value is not None and not value.is_absolute()}
        config = config.model_copy(update={"rules": config.rules.model_copy(update=rules)})
        tls = {key: here / value for key, value in config.web if key.startswith("tls_")
               and isinstance(value, Path) and not value.is_absolute()}
        config = config.model_copy(update={"web": config.web.model_copy(update=tls)})
        mqtt_files = {key: here / value for key in ("ca_file", "cert_file", "key_file")
                      if isinstance(value := getattr(config.mqtt, key), Path) and not value.is_absolute()}
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update=mqtt_files)})
        if config.model.path is not None and not config.model.path.is_absolute():
            config = config.model_copy(
                update={"model": config.model.model_copy(update={"path": here / config.model.path})})
        profile = Path(config.plc.profile)
        if len(profile.parts) > 1 or profile.suffix:  # a file, not a name in drivers/profiles
            if not profile.is_absolute():
                config = config.model_copy(
                    update={"plc": config.plc.model_copy(update={"profile": str(here / profile)})})
    return config


_HEADER = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                  r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=\s*(.*)$")
_INLINE_KEY = re.compile(r"(?:^|[{,])\s*([A-Za-z0-9_-]+)\s*=")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in re.split(r"\.(?=(?:[^\"']|\"[^\"]*\"|'[^']*')*$)", text))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Where each key and table of a TOML text is written (first line), by its full key path.

    Knows table headers (with trailing comments), quoted and dotted keys, and the keys of an inline
    table (on the inline table's line); skips arrays of tables and the inside of multi-line strings."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] | None = ()
    in_string = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string:
            in_string = line.count('"""') % 2 == 0
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            table = None  # an array of tables: its keys have no single path
            continue
        if header := _HEADER.match(line):
            table = _dotted(header.group(1))
            for n in range(1, len(table) + 1):  # [a.b] also makes table a, if nothing did before
                lines.setdefault(table[:n], number)
            continue
        key = _KEY.match(line)
        if key is None or table is None:
            continue
        path = table + _dotted(key.group(1))
        for n in range(len(table) + 1, len(path)):  # a.b = 1 also makes table a, if nothing did before
            lines.setdefault(path[:n], number)
        lines.setdefault(path, number)
        value = key.group(2)
        if value.startswith("{"):
            for inner in _INLINE_KEY.findall(value.split("#", 1)[0]):
                lines.setdefault((*path, inner), number)
        in_string = value.count('"""') % 2 == 1
    return lines


def line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the key at `loc` (pydantic's error location), or of the nearest table around it.
    Parts of `loc` that are not keys of the file (a union's tag, a list index) are passed over."""
    if not text or not loc:
        return None
    known = key_lines(text)
    path: tuple[str, ...] = ()
    found = None
    for part in loc:
        if (*path, str(part)) in known:
            path += (str(part),)
            found = known[path]
    return found
