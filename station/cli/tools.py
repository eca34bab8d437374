"""`station config check`, `station inspect` and `station render`: tools that need no running lane."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from station.config import load_config

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".xde"}


def add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="configuration tools").add_subparsers(required=True, metavar="ACTION")
    check = config.add_parser("check", help="everything `station run` checks before it starts, without starting")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)

    inspect = sub.add_parser("inspect", help="run the detector on image files or folders")
    inspect.add_argument("paths", nargs="+", type=Path)
    inspect.add_argument("--model", type=Path, help="model folder (default: the packaged model)")
    inspect.add_argument("--threads", type=int, default=2)
    inspect.add_argument("--json", action="store_true", help="one JSON object per image")
    inspect.set_defaults(handler=_inspect)

    render = sub.add_parser("render",
                            help="write a scan as the operator sees it (material colours for dual energy) as PNG")
    render.add_argument("image", type=Path)
    render.add_argument("-o", "--out", type=Path, help="PNG to write (default: ./<name>-render.png)")
    render.add_argument("--detect", action="store_true", help="run the detector and draw its boxes")
    render.add_argument("--model", type=Path, help="with --detect: model folder (default: the packaged model)")
    render.set_defaults(handler=_render)


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
    from station.inference import InferenceProblem, detect_file
    from station.kernel.detector import DEFAULT_MODEL, Detector, ModelError

    try:
        detector = Detector.load(args.model or DEFAULT_MODEL, threads=args.threads)
    except ModelError as err:
        print(f"model: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in _image_files(args.paths):
        record: dict[str, Any] = {"path": str(path), "flagged": None, "score": None, "detections": [], "error": None}
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
            labels = ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"])
            print(f"{verdict:<8} {path}  {record['error'] or labels}", flush=True)
    return 1 if failed else 0


def _render(args: argparse.Namespace) -> int:
    import cv2

    from station.kernel.imaging import ImageError, load_image, render_scan

    try:
        image = load_image(args.image)
    except ImageError as err:
        print(err, file=sys.stderr)
        return 1
    boxes = []
    if args.detect:
        from station.kernel.detector import DEFAULT_MODEL, Detector, ModelError

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
