"""`station lane`, `station alarm` and `station model load|rollback|status`: the running lane, over its
control socket (station/control.py). Replies print for a person, or as JSON with `--json`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from station.cli.common import config_args, tell_daemon
from station.cli.diag.render import table


def add_lane_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lane = sub.add_parser("lane", help="operate the running lane: status, start, stop, reset (after a fault), "
                          "maintenance (belt stopped, every item INSPECT, PLC outputs to the technician)")
    config_args(lane)
    lane.add_argument("action", choices=["status", "start", "stop", "reset", "maintenance"])
    lane.add_argument("--json", action="store_true", help="the reply as one JSON object (status: the whole snapshot)")
    lane.set_defaults(handler=_lane)

    alarm = sub.add_parser("alarm", help="the running lane's active alarms: list, acknowledge, clear")
    alarm_sub = alarm.add_subparsers(required=True, metavar="ACTION")
    for name, what in (("list", "the active alarms"), ("ack", "acknowledge an alarm: seen, being dealt with"),
                       ("clear", "clear an alarm once its cause is put right (a held belt runs again)")):
        p = alarm_sub.add_parser(name, help=what)
        config_args(p)
        if name != "list":
            p.add_argument("code", help="the alarm's code, as `station alarm list` shows it")
        p.add_argument("--json", action="store_true", help="the reply as one JSON object")
        p.set_defaults(handler=_alarm, alarm_action=name)


def _lane(args: argparse.Namespace) -> int:
    return tell_daemon(args, args.action, show=None if args.json else status_lines)


def _alarm(args: argparse.Namespace) -> int:
    if args.alarm_action == "list":
        return tell_daemon(args, "status", show=None if args.json else alarm_lines)
    return tell_daemon(args, f"alarm-{args.alarm_action}", code=args.code, show=None if args.json else status_lines)


def status_lines(status: dict[str, Any]) -> list[str]:
    """A lane status snapshot (LaneStatus.as_dict) as a technician reads it on a terminal."""
    at = time.strftime("%H:%M:%S", time.localtime(float(status["at"])))
    reason = f" ({status['reason']})" if status.get("reason") else ""
    model = status.get("model")
    software = f"  station {status['software_version']}" if status.get("software_version") else ""
    lines = [f"lane {status['site']}/{status['lane']}  {status['state']}{reason}  at {at}{software}",
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
                        [(str(t["track_id"]), t["item_id"] or "-",
                          "-" if t["lead_mm"] is None else f"{t['lead_mm']:.0f}", t["decision"] or "pending",
                          "CLEAR" if t["armed"] else "-", ", ".join(t["problems"]) or "-")
                         for t in on_belt])
    return [*lines, "", *alarm_lines(status)]


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
        return tell_daemon(args, "model-load", timeout=120, path=str(args.dir.resolve()))
    return tell_daemon(args, f"model-{args.model_action}")


def add_model_control_commands(model: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`station model load|rollback|status`: the running lane's model, over the control socket."""
    load_ = model.add_parser("load", help="verify, warm up and swap in a model on the running lane (between items)")
    load_.add_argument("dir", type=Path, help="model folder: model.onnx + manifest.json")
    rollback = model.add_parser("rollback", help="swap back to the model in use before the last change")
    status = model.add_parser("status", help="the running lane's model, the previous one, MANUAL_ONLY and why")
    for p, action in ((load_, "load"), (rollback, "rollback"), (status, "status")):
        config_args(p)
        p.set_defaults(handler=_model_control, model_action=action)
