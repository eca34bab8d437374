"""Where a device is: the transports a driver can be given, as plain values.

The station's configuration builds these; drivers take them, so that no driver knows about the
configuration file and the same driver serves a TCP and a serial (RTU) PLC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TcpLink:
    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RtuLink:
    """Modbus RTU over a serial line (RS-485 adapter, or a pseudo-terminal in the simulator)."""

    port: str
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.port}@{self.baudrate}{self.parity}{self.bytesize}{self.stopbits}"


Link = TcpLink | RtuLink
