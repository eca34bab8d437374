"""The `station` command.

Exit codes: 0 success; 1 the command ran and found a failure (a bad record, an unreadable image);
2 the command could not run as asked (bad configuration, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from station.config import Config, ConfigError, load_config
from station.diag import add_diag_commands
from station.diag.render import table
from station.ead.commands import add_ead_commands
from station.model_tools import add_model_commands
from station.rules_commands import add_rules_commands

if TYPE_CHECKING:
    from simulator.faults import Fault

T = TypeVar("T")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".xde"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except ConfigError as err:
        print(f"configuration error:\n{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="station", description="Edge controller of a postal X-ray screening lane.")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the lane")
    _config_args(run)
    run.add_argument("--simulate", action="store_true", help="run on the built-in simulated lane")
    run.add_argument("--items", type=int, help="with --simulate: stop after N items and print a summary")
    run.add_argument("--plc-port", type=int, default=0, help="with --simulate: the simulated PLC's port (0 = any free)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--fault", action="append", default=[], metavar="NAME[=N]",
                     help="with --simulate: inject a fault at start (repeatable; `station sim --list-faults`)")
    run.set_defaults(handler=_run)

    sim = sub.add_parser("sim", help="run the simulated lane alone, for a station (or mbpoll) to connect to")
    _config_args(sim)
    sim.add_argument("--plc-port", type=int, default=5020, help="Modbus TCP port of the simulated PLC")
    sim.add_argument("--items", type=int, help="stop feeding after N items")
    sim.add_argument("--fault", action="append", default=[], metavar="NAME[=N]",
                     help="inject a fault at start (repeatable); more can be typed on standard input as 'fault NAME[=N]'")
    sim.add_argument("--list-faults", action="store_true", help="list the faults that can be injected, and exit")
    sim.add_argument("--first-item", type=int, default=0, metavar="N",
                     help="the item stream's first index (a restarted simulator feeds new items, not the same again)")
    sim.add_argument("--truth", type=Path, metavar="FILE",
                     help="append the ground truth to FILE as JSON lines: each item placed, and the bin it fell into")
    sim.set_defaults(handler=_sim)

    lane = sub.add_parser("lane", help="operate the running lane: status, start, stop, reset (after a fault), "
                          "maintenance (belt stopped, every item INSPECT, PLC outputs to the technician)")
    _config_args(lane)
    lane.add_argument("action", choices=["status", "start", "stop", "reset", "maintenance"])
    lane.add_argument("--json", action="store_true", help="the reply as one JSON object (status: the whole snapshot)")
    lane.set_defaults(handler=_lane)

    alarm = sub.add_parser("alarm", help="the running lane's active alarms: list, acknowledge, clear")
    alarm_sub = alarm.add_subparsers(required=True, metavar="ACTION")
    for name, what in (("list", "the active alarms"), ("ack", "acknowledge an alarm: seen, being dealt with"),
                       ("clear", "clear an alarm once its cause is put right (a held belt runs again)")):
        p = alarm_sub.add_parser(name, help=what)
        _config_args(p)
        if name != "list":
            p.add_argument("code", help="the alarm's code, as `station alarm list` shows it")
        p.add_argument("--json", action="store_true", help="the reply as one JSON object")
        p.set_defaults(handler=_alarm, alarm_action=name)

    config = sub.add_parser("config", help="configuration tools").add_subparsers(required=True, metavar="ACTION")
    check = config.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)

    add_ead_commands(sub)

    inspect = sub.add_parser("inspect", help="run the detector on image files or folders")
    inspect.add_argument("paths", nargs="+", type=Path)
    inspect.add_argument("--model", type=Path, help="model folder (default: the packaged model)")
    inspect.add_argument("--threads", type=int, default=2)
    inspect.add_argument("--json", action="store_true", help="one JSON object per image")
    inspect.set_defaults(handler=_inspect)

    render = sub.add_parser("render", help="write a scan as the operator sees it (material colours for dual energy) as PNG")
    render.add_argument("image", type=Path)
    render.add_argument("-o", "--out", type=Path, help="PNG to write (default: ./<name>-render.png)")
    render.add_argument("--detect", action="store_true", help="run the detector and draw its boxes")
    render.add_argument("--model", type=Path, help="with --detect: model folder (default: the packaged model)")
    render.set_defaults(handler=_render)

    add_diag_commands(sub)
    add_model_control_commands(add_model_commands(sub))
    add_rules_commands(sub)
    return parser


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="configuration file (TOML); default: built-in defaults")
    p.add_argument("--data-dir", type=Path, help="override storage.data_dir")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.data_dir is not None:
        config = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": args.data_dir})})
    return config


# ---- commands -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config = _load(args)  # before the heavy imports: a bad file is reported at once

    from station.daemon import run_station
    from station.store import Store
    from station.summary import summarise

    if args.items is not None and not args.simulate:
        print("--items needs --simulate", file=sys.stderr)
        return 2
    faults = _faults(args.fault)
    if faults is None:
        return 2
    from station.lock import DataDirLocked
    from station.preflight import check

    refusing = [p for p in check(config, simulate=args.simulate) if p.refuses_start]
    if refusing:
        source = str(args.config) if args.config else None
        text = args.config.read_text(encoding="utf-8") if args.config else ""
        print("configuration error:\n" + "\n".join(p.text(source, text) for p in refusing), file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_until_terminated(run_station(
            config, simulate=args.simulate, items=args.items, plc_port=args.plc_port, faults=faults)))
    except DataDirLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is None:
        return 0  # stopped by SIGTERM, cleanly
    if args.simulate:
        with Store(result.store_path) as store:
            summary = summarise(store, result.sim_outcomes, since=result.started_at)
        summary["outbox"] = {"published": result.published, "waiting": result.outbox_left}
        summary["ready_s"] = None if result.ready_s is None else round(result.ready_s, 2)  # start to first PLC poll
        summary["loop_stall_ms"] = round(result.longest_stall_s * 1000, 1)  # the event loop's longest stall
        summary["alarms"] = result.alarms
        if args.json:
            print(json.dumps(summary))
        else:
            for key, value in summary.items():
                print(f"{key:>22}  {value}")
        return 0 if summary["lost"] == summary["misrouted"] == summary["of_which_unsafe"] == 0 else 1
    return 0


def _sim(args: argparse.Namespace) -> int:
    from simulator.central import CentralFeed
    from simulator.faults import FAULTS, Fault, FaultError
    from simulator.lane import SimLane

    if args.list_faults:
        for name, what in FAULTS.items():
            print(f"{name:<16} {what}")
        return 0
    config = _load(args)
    faults = _faults(args.fault)
    if faults is None:
        return 2

    async def serve() -> None:
        # With a broker configured, central's EAD feed publishes there; without one it is a file.
        feed = CentralFeed(config.mqtt, config.station.site) if config.mqtt.host else None
        async with SimLane(config.simulator, config.lane, config.storage.data_dir / "sim",
                           plc_port=args.plc_port, max_items=args.items, profile=config.plc.profile,
                           central=feed, first_item=args.first_item, truth_file=args.truth) as sim:
            for fault in faults:
                await sim.inject(fault)
            print(json.dumps(sim.endpoints), flush=True)
            lines = _stdin_lines()
            while (line := await lines.get()) is not None:  # until EOF, Ctrl-C or SIGTERM
                words = line.split()
                if len(words) == 2 and words[0] == "fault":
                    try:
                        await sim.inject(Fault.parse(words[1]))
                    except FaultError as err:
                        print(f"error: {err}", file=sys.stderr, flush=True)
                elif len(words) == 2 and words[0] == "feed" and words[1] in ("on", "off"):
                    sim.feeding = words[1] == "on"
                elif words:
                    print("error: expected 'fault NAME[=N]' or 'feed on|off'", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # standard input closed: serve until interrupted

    asyncio.run(_until_terminated(serve()))
    return 0


async def _until_terminated(job: Coroutine[Any, Any, T]) -> T | None:
    """Run `job`; SIGTERM (how service managers stop a daemon) cancels it like Ctrl-C, and returns None."""
    task = asyncio.ensure_future(job)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
            return None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Standard input's lines, then None at EOF. A daemon thread reads, so a pending read never blocks exit."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue[str | None]()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


def _faults(texts: Sequence[str]) -> list[Fault] | None:
    from simulator.faults import Fault, FaultError

    try:
        return [Fault.parse(text) for text in texts]
    except FaultError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _lane(args: argparse.Namespace) -> int:
    return _tell_daemon(args, args.action, show=None if args.json else status_lines)


def _alarm(args: argparse.Namespace) -> int:
    if args.alarm_action == "list":
        return _tell_daemon(args, "status", show=None if args.json else alarm_lines)
    return _tell_daemon(args, f"alarm-{args.alarm_action}", code=args.code, show=None if args.json else status_lines)


def status_lines(status: dict[str, Any]) -> list[str]:
    """A lane status snapshot (LaneStatus.as_dict) as a technician reads it on a terminal."""
    at = time.strftime("%H:%M:%S", time.localtime(float(status["at"])))
    reason = f" ({status['reason']})" if status.get("reason") else ""
    model = status.get("model")
    lines = [f"lane {status['site']}/{status['lane']}  {status['state']}{reason}  at {at}",
             f"model  {model['name']} {model['version']}  {model['hash'][:16]}" if model else
             "model  none: MANUAL_ONLY, every item to INSPECT",
             "", *table(("device", "state", "last ok", "errors", "detail"),
                         [(name, d["state"], _ago(d["last_success"], float(status["at"])),
                           ", ".join(f"{k} {v}" for k, v in d["errors"].items()) or "-", d["detail"])
                          for name, d in status["devices"].items()])]
    c, o = status["counters"], status["outbox"]
    reasons = ", ".join(f"{k} {v}" for k, v in c["by_reason"].items())
    lines += ["", f"items  {c['items']}  cleared {c['cleared']}  inspected {c['inspected']}"
              + (f"  ({reasons})" if reasons else ""),
              f"outbox  {o['depth']} waiting" + (f", oldest {o['oldest_age_s']:g} s" if o["oldest_age_s"] is not None
                                                 else "") + f", {o['published']} published this run"]
    if status.get("unseen_belt_mm"):
        lines.append(f"unseen belt  {status['unseen_belt_mm']} mm ahead of the gate: what is on it goes to INSPECT")
    on_belt = status["on_belt"]
    lines += ["", f"on the belt  {len(on_belt)}"]
    if on_belt:
        lines += table(("track", "item", "at mm", "decision", "gate", "problems"),
                        [(str(t["track_id"]), t["item_id"] or "-", "-" if t["lead_mm"] is None else f"{t['lead_mm']:.0f}",
                          t["decision"] or "pending", "CLEAR" if t["armed"] else "-", ", ".join(t["problems"]) or "-")
                         for t in on_belt])
    return lines + [""] + alarm_lines(status)


def alarm_lines(status: dict[str, Any]) -> list[str]:
    alarms = status["alarms"]
    if not alarms:
        return ["alarms  none active"]
    now = float(status["at"])
    return [f"alarms  {len(alarms)} active", *table(
        ("code", "raised", "times", "acknowledged", "detail"),
        [(a["code"], _ago(a["first_at"], now), str(a["count"]),
          f"by {a['acked_by']}" if a["acked_by"] else "no", a["detail"]) for a in alarms])]


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago" if seconds < 7200 else \
        time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _model_control(args: argparse.Namespace) -> int:
    if args.model_action == "load":
        return _tell_daemon(args, "model-load", timeout=120, path=str(args.dir.resolve()))
    return _tell_daemon(args, f"model-{args.model_action}")


def add_model_control_commands(model: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`station model load|rollback|status`: the running lane's model, over the control socket."""
    load = model.add_parser("load", help="verify, warm up and swap in a model on the running lane (between items)")
    load.add_argument("dir", type=Path, help="model folder: model.onnx + manifest.json")
    rollback = model.add_parser("rollback", help="swap back to the model in use before the last change")
    status = model.add_parser("status", help="the running lane's model, the previous one, MANUAL_ONLY and why")
    for p, action in ((load, "load"), (rollback, "rollback"), (status, "status")):
        _config_args(p)
        p.set_defaults(handler=_model_control, model_action=action)


def _tell_daemon(args: argparse.Namespace, action: str, timeout: float = 5.0,
                 show: Callable[[dict[str, Any]], list[str]] | None = None, **fields: object) -> int:
    """One command to the running daemon's control socket; its reply on standard output, as JSON or as
    `show` writes it for a person (with the refusal or error on standard error)."""
    from station.control import send, socket_path

    path = socket_path(_load(args).storage.data_dir)
    try:
        reply = asyncio.run(send(path, action, timeout, **fields))
    except (OSError, TimeoutError) as err:
        print(f"no station answering on {path}: {err}", file=sys.stderr)
        return 1
    if show is None:
        print(json.dumps(reply))
    else:
        if not reply.get("ok"):
            print(f"refused: {reply.get('error') or ', '.join(map(str, reply.get('refused', [])))}", file=sys.stderr)
        if "state" in reply:
            print("\n".join(show(reply)))
    return 0 if reply.get("ok") else 1


def _config_check(args: argparse.Namespace) -> int:
    """`station run`'s checks without the start (station/preflight.py), and the model loaded as it loads it."""
    from station.preflight import check, check_model
    from station.rules import load_ruleset

    config = load_config(args.file)
    problems = check(config) + check_model(config)
    if problems:
        text = args.file.read_text(encoding="utf-8")
        print("configuration error:\n" + "\n".join(p.text(str(args.file), text) for p in problems), file=sys.stderr)
        return 2
    print(f"{args.file}: ok (PLC profile {config.plc.profile}, rules {load_ruleset(config).version}, "
          f"model {config.model.path or 'packaged default'})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from station.daemon import DEFAULT_MODEL
    from station.detector import Detector, ModelError
    from station.inference import InferenceProblem, detect_file

    try:
        detector = Detector.load(args.model or DEFAULT_MODEL, threads=args.threads)
    except ModelError as err:
        print(f"model: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in _image_files(args.paths):
        record: dict[str, object] = {"path": str(path), "flagged": None, "score": None, "detections": [], "error": None}
        try:
            found = detect_file(detector, path)
        except InferenceProblem as err:
            failed += 1
            record["error"] = err.reason.detail
        else:
            threats = [d for d in found if d.threat]
            record["flagged"] = bool(threats)
            record["score"] = round(max((d.score for d in threats), default=0.0), 4)
            record["detections"] = [{"label": d.label, "score": round(d.score, 4), "threat": d.threat,
                                     "box": [round(v, 1) for v in d.box]} for d in found]
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            verdict = "ERROR" if record["error"] else ("FLAGGED" if record["flagged"] else "clear")
            labels = ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"])  # type: ignore[union-attr]
            print(f"{verdict:<8} {path}  {record['error'] or labels}", flush=True)
    return 1 if failed else 0


def _render(args: argparse.Namespace) -> int:
    import cv2

    from station.imaging import ImageError, load_image, render_scan

    try:
        image = load_image(args.image)
    except ImageError as err:
        print(err, file=sys.stderr)
        return 1
    boxes = []
    if args.detect:
        from station.daemon import DEFAULT_MODEL
        from station.detector import Detector, ModelError

        try:
            detector = Detector.load(args.model or DEFAULT_MODEL, threads=1)
        except ModelError as err:
            print(f"model: {err}", file=sys.stderr)
            return 2
        boxes = [(d.label, d.score, d.box, detector.is_threat(d)) for d in detector.detect(image.plane)]
    out = args.out or Path(f"{args.image.stem}-render.png")
    if out.suffix.lower() != ".png":
        print(f"{out}: the output is a PNG; name it .png", file=sys.stderr)
        return 2
    if not cv2.imwrite(str(out), render_scan(image, boxes)):
        print(f"{out}: cannot write", file=sys.stderr)
        return 1
    print(f"{out}  {image.kind} {image.plane.shape[1]} x {image.plane.shape[0]}"
          + (f", {len(boxes)} detection(s): " + ", ".join(f"{b[0]} {b[1]:.2f}" for b in boxes) if args.detect else ""))
    return 0


def _image_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given (whatever their name: a bad one is reported, not skipped), folders searched for images."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            files.append(path)
    return files


if __name__ == "__main__":
    sys.exit(main())
