"""The campaign's tables and config writer against the fault list and the config models they feed."""

import tomllib

from bench.campaign import ARGS, BLOCKING, OFF, toml
from simulator.faults import FAULTS, Fault
from station.config import parse_config


def test_every_fault_the_campaign_names_parses() -> None:
    assert set(ARGS) | set(OFF) | BLOCKING <= set(FAULTS)
    for name, args in ARGS.items():
        for arg in args:
            assert Fault.parse(f"{name}={arg}").arg == arg
    for off in OFF.values():
        Fault.parse(off)


def test_the_configs_it_writes_are_valid() -> None:
    station = toml({"plc.link": {"type": "tcp", "host": "127.0.0.1", "port": 5020},
                    "scanner": {"port": "/dev/pts/3", "spool_dir": "/x/sim/spool"}, "barcode": {"port": "/dev/pts/4"},
                    "storage": {"data_dir": "/x/station", "min_free_mb": 16}, "lane": {"auto_start": True}})
    config = parse_config(tomllib.loads(station))
    assert config.plc.link.port == 5020 and config.storage.min_free_mb == 16 and config.lane.auto_start
    sim = parse_config(tomllib.loads(toml({"simulator": {"seed": 7, "item_rate_per_s": 1.0}})))
    assert sim.simulator.seed == 7
