"""`station model`: evaluate, benchmark, verify and pin a detection model at the box.

Exit codes as the `station` command's: 0 ok; 1 the command ran and found a failure (an
unreadable image or label file, a failed verification check, a missed budget with ``--check``,
a manifest `pin` refuses);
2 it could not run as asked (no such folder, a model that does not load). Output is aligned text
for people, or one JSON object with ``--json``. Handlers import numpy, onnxruntime and the
simulator only when they run, so that `station --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.evaluate import Curve, Result
    from station.kernel.detector import Detection, Detector

OK, FAIL, USAGE = 0, 1, 2


def add_model_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Register `model` and its subcommands; returns the `model` group's subparsers so that
    more actions (load, rollback, status) can be added to it."""
    model = sub.add_parser("model", help="detection model tools: eval, bench, verify, pin")
    actions = model.add_subparsers(required=True, metavar="ACTION")

    ev = actions.add_parser("eval", help="measure the model on labelled images or fresh synthetic parcels")
    model_arg(ev)
    ev.add_argument("path", nargs="?", type=Path,
                    help="a folder with a sub-folder per class, or a YOLO folder (images/ + labels/)")
    ev.add_argument("--synthetic", type=int, metavar="N",
                    help="instead of PATH: N fresh synthetic parcels (half benign)")
    ev.add_argument("--seed", type=int, default=0, help="with --synthetic: the set's seed (offset from training's)")
    ev.add_argument("--threat-folders", "--threat-names", default="", metavar="A,B=CLASS",
                    help="folder or label names that are threats besides the model's threat classes; "
                         "NAME=CLASS scores NAME with the model class CLASS (e.g. razor_blade=blade)")
    ev.add_argument("--names",
                    help="YOLO: class names for the label ids, comma-separated (default: data.yaml, else the model's)")
    ev.add_argument("--pr-curve", type=Path, metavar="PNG", help="write the precision-recall curves to this image")
    ev.add_argument("--threads", type=int, default=1)
    json_arg(ev)
    ev.set_defaults(handler=_eval)

    bench = actions.add_parser("bench", help="latency and throughput: the station's pipeline vs bare session.run")
    model_arg(bench)
    bench.add_argument("--images", type=Path, metavar="DIR", help="images to time (default: fresh synthetic scans)")
    bench.add_argument("--count", type=int, default=20, help="synthetic scans to write when no --images")
    bench.add_argument("--rounds", type=int, default=15, help="passes over the images")
    bench.add_argument("--threads", default="1,2", help="thread counts to time, comma-separated")
    bench.add_argument("--check", action="store_true", help="exit 1 when the budgets are missed")
    json_arg(bench)
    bench.set_defaults(handler=_bench)

    verify = actions.add_parser("verify", help="check manifest, SHA-256, pin, shapes and one inference")
    model_arg(verify)
    json_arg(verify)
    verify.set_defaults(handler=_verify)

    pin = actions.add_parser("pin", help="after reviewing an edited manifest: pin it to its ONNX file (writes its pin)")
    pin.add_argument("dir", type=Path, help="model folder: model.onnx + manifest.json")
    json_arg(pin)
    pin.set_defaults(handler=_pin)
    return actions


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the packaged model)")


def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _model_dir(args: argparse.Namespace) -> Path:
    from station.kernel.detector import DEFAULT_MODEL

    return Path(args.model or DEFAULT_MODEL)


def _detector(args: argparse.Namespace) -> Detector | None:
    from station.kernel.detector import Detector, ModelError

    try:
        return Detector.load(_model_dir(args), threads=args.threads)
    except ModelError as err:
        print(f"model: {err}", file=sys.stderr)
        return None


def _emit(args: argparse.Namespace, report: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(report) if args.json else "\n".join(lines), flush=True)


# ---- eval ---------------------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from models import evaluate

    if (args.synthetic is None) == (args.path is None):
        print("give a folder to evaluate, or --synthetic N (not both)", file=sys.stderr)
        return USAGE
    if args.path is not None and not args.path.is_dir():
        print(f"{args.path}: not a folder", file=sys.stderr)
        return USAGE
    det = _detector(args)
    if det is None:
        return USAGE
    threat_map = {c: c for c in det.manifest.threat_classes}  # name -> model class, "" = any threat
    for word in filter(None, (w.strip() for w in args.threat_folders.split(","))):
        name, _, cls = word.partition("=")
        if cls and cls not in det.manifest.classes:
            print(f"--threat-folders: {cls!r} is not a class of the model {det.manifest.classes}", file=sys.stderr)
            return USAGE
        threat_map[name] = cls
    errors: list[dict[str, str]] = []
    if args.synthetic is not None:
        seed = args.seed + evaluate.EVAL_OFFSET
        report, curves = _box_report(det, evaluate.run_set(det, seed, args.synthetic), threat_map)
        report.update(mode="synthetic",
                      source=f"fresh synthetic parcels, seed {seed}, {args.synthetic} images (half benign)")
    elif (args.path / "images").is_dir():
        try:
            names = _yolo_names(args, det)
        except evaluate.LabelError as err:
            print(str(err), file=sys.stderr)
            return USAGE
        report, curves = _box_report(det, _yolo_results(det, args.path, names, errors), threat_map)
        report.update(mode="yolo", source=str(args.path), names=names)
    else:
        report, curves = _folder_report(det, args.path, threat_map, errors)
        report.update(mode="folders", source=str(args.path))
    m = det.manifest
    report.update(model={"name": m.name, "version": m.version, "pin": det.model_hash, "sha256": m.sha256,
                         "path": str(det.path)},
                  thresholds=evaluate.operating_thresholds(det), errors=errors, figures={})
    if args.pr_curve is not None:
        evaluate.draw_pr_curves(curves, args.pr_curve, f"{m.name} {m.version}: {report['mode']} {report['source']}")
        report["figures"]["pr_curve"] = str(args.pr_curve)
    _emit(args, report, _eval_lines(report))
    return FAIL if errors else OK


def _detect(det: Detector, path: Path, errors: list[dict[str, str]]) -> tuple[tuple[int, int], list[Detection]] | None:
    """Detections (low floor, for AP) of one image and its size; a load error is listed, not raised."""
    from models.evaluate import FLOOR
    from station.kernel.imaging import ImageError, load_image

    try:
        plane = load_image(path).plane
    except ImageError as err:
        errors.append({"path": str(path), "error": str(err)})
        return None
    return plane.shape, det.detect(plane, dict.fromkeys(det.manifest.classes, FLOOR))


def _yolo_names(args: argparse.Namespace, det: Detector) -> list[str]:
    from models.evaluate import read_names

    if args.names:
        return [n.strip() for n in args.names.split(",")]
    yaml = args.path / "data.yaml"
    return read_names(yaml) if yaml.is_file() else list(det.manifest.classes)


def _yolo_results(det: Detector, root: Path, names: list[str], errors: list[dict[str, str]]) -> list[Result]:
    from models.bench import image_files
    from models.evaluate import LabelError, read_yolo_labels

    results: list[Result] = []
    for path in image_files(root / "images"):
        label = (root / "labels" / path.relative_to(root / "images")).with_suffix(".txt")
        found = _detect(det, path, errors)
        if found is None:
            continue
        (height, width), dets = found
        try:
            results.append((read_yolo_labels(label, names, width, height), dets))
        except LabelError as err:
            errors.append({"path": str(label), "error": str(err)})
    return results


def _flagged(det: Detector, dets: list[Detection], classes: set[str] | None = None) -> bool:
    thr = det.manifest.thresholds
    allowed = set(det.manifest.threat_classes) if classes is None else classes
    return any(d.label in allowed and d.score >= thr.get(d.label, det.manifest.default_threshold) for d in dets)


def _box_report(det: Detector, results: list[Result], threat_map: dict[str, str]) -> tuple[dict[str, Any], list[Curve]]:
    """Box-level figures: per-class AP@0.5, threat recall (images and objects) at the operating
    point, false-alarm rate on images without threat labels. Mapped names become model classes."""
    from models.evaluate import box_curve

    results = [([(threat_map.get(lab) or lab, box) for lab, box in truth], dets) for truth, dets in results]
    threats = set(det.manifest.threat_classes)
    is_threat = {lab for truth, _ in results for lab, _ in truth if lab in threat_map or lab in threats}
    curves = []
    order = {c: i for i, c in enumerate(det.manifest.classes)}
    for label in sorted(is_threat, key=lambda s: (order.get(s, len(order)), s)):
        det_labels = {label} if label in det.manifest.classes else threats
        curves.append(box_curve(results, label, lambda d: _flagged(det, [d]), det_labels))
    has_threat = [any(lab in is_threat for lab, _ in truth) for truth, _ in results]
    bearing = [r for r, t in zip(results, has_threat, strict=True) if t]
    clean = [r for r, t in zip(results, has_threat, strict=True) if not t]
    n_obj = sum(c.n_pos for c in curves)
    found = sum(round(c.op_recall * c.n_pos) for c in curves)
    report = {
        "images": len(results), "images_with_threats": len(bearing), "images_without_threats": len(clean),
        "ap50": {c.label: _r(c.ap) for c in curves},
        "map50": _r(sum(c.ap for c in curves) / len(curves)) if curves else None,
        "threat_recall_images": _share(sum(_flagged(det, d) for _, d in bearing), len(bearing)),
        "threat_recall_objects_iou50": _share(found, n_obj),
        "false_alarm_rate": _share(sum(_flagged(det, d) for _, d in clean), len(clean)),
        "curves": [_curve_json(c) for c in curves],
    }
    return report, curves


def _folder_report(det: Detector, root: Path, threat_map: dict[str, str],
                   errors: list[dict[str, str]]) -> tuple[dict[str, Any], list[Curve]]:
    """Image-level figures: share flagged per folder, threat recall and false-alarm rate at the
    operating point, and an image-level AP per threat folder (against the benign folders)."""
    from models.bench import image_files
    from models.evaluate import image_curve

    threats = set(det.manifest.threat_classes)
    per_folder: dict[str, list[list[Detection]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        rows = per_folder.setdefault(folder.name, [])
        for path in image_files(folder):
            found = _detect(det, path, errors)
            if found is not None:
                rows.append(found[1])
    benign = [d for name, rows in per_folder.items() if name not in threat_map for d in rows]
    curves: list[Curve] = []
    folders: dict[str, dict[str, Any]] = {}
    for name, rows in per_folder.items():
        cls = threat_map.get(name)
        flagged = [_flagged(det, d) for d in rows]
        scored_as = None if cls is None else (cls or "any threat")
        folders[name] = {"role": "benign" if cls is None else "threat", "scored_as": scored_as,
                         "images": len(rows), "flagged": sum(flagged), "flagged_share": _share(sum(flagged), len(rows))}
        if cls is None:
            continue
        scored = {cls} if cls else threats
        pool = rows + benign
        curves.append(image_curve(name, [max((d.score for d in ds if d.label in scored), default=0.0) for ds in pool],
                                  [i < len(rows) for i in range(len(pool))],
                                  [_flagged(det, ds, scored) for ds in pool]))
        folders[name]["ap_image"] = _r(curves[-1].ap)
    threat_rows = [d for name, rows in per_folder.items() if name in threat_map for d in rows]
    report = {
        "images": sum(len(r) for r in per_folder.values()), "folders": folders,
        "ap_image": {c.label: _r(c.ap) for c in curves},
        "threat_recall_images": _share(sum(_flagged(det, d) for d in threat_rows), len(threat_rows)),
        "false_alarm_rate": _share(sum(_flagged(det, d) for d in benign), len(benign)),
        "curves": [_curve_json(c) for c in curves],
    }
    return report, curves


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)  # NaN (no positives) -> null


def _share(k: int, n: int) -> dict[str, Any]:
    return {"share": round(k / n, 4) if n else None, "count": int(k), "of": n}


def _curve_json(c: Curve) -> dict[str, Any]:
    return {"label": c.label, "ap": _r(c.ap), "positives": c.n_pos,
            "operating_point": {"precision": _r(c.op_precision), "recall": _r(c.op_recall)}}


def _fmt_share(s: dict[str, Any]) -> str:
    return "n/a (none)" if s["share"] is None else f"{s['share']:.3f} ({s['count']}/{s['of']})"


def _eval_lines(r: dict[str, Any]) -> list[str]:
    m = r["model"]
    lines = [f"model {m['name']} {m['version']} (pin {m['pin'][:12]}), {r['mode']}: {r['source']}",
             f"{r['images']} images evaluated, {len(r['errors'])} unreadable",
             "operating point (manifest thresholds): " + ", ".join(f"{c} {t:g}" for c, t in r["thresholds"].items())]
    if r["mode"] == "folders":
        lines.append(f"{'folder':<20} {'role':<7} {'scored as':<11} {'images':>6} {'flagged':>8} {'AP(img)':>8}")
        for name, f in r["folders"].items():
            ap = f.get("ap_image")
            lines.append(f"{name:<20} {f['role']:<7} {f['scored_as'] or '-':<11} {f['images']:>6} "
                         f"{_fmt_share_short(f['flagged_share'])} {'-' if ap is None else f'{ap:.3f}':>8}")
    else:
        lines.append(f"{'class':<20} {'objects':>7} {'AP@0.5':>7} {'op precision':>12} {'op recall':>9}")
        for c in r["curves"]:
            ap = "-" if c["ap"] is None else f"{c['ap']:.3f}"
            precision, recall = (_num(c["operating_point"][k]) for k in ("precision", "recall"))
            lines.append(f"{c['label']:<20} {c['positives']:>7} {ap:>7} {precision:>12} {recall:>9}")
        if r["map50"] is not None:
            lines.append(f"{'mAP@0.5':<20} {'':>7} {r['map50']:>7.3f}")
        lines.append(f"{'threat objects found (IoU >= 0.5) at operating point':<54} "
                     f"{_fmt_share(r['threat_recall_objects_iou50'])}")
    lines.append(f"{'threat recall (images flagged) at operating point':<54} {_fmt_share(r['threat_recall_images'])}")
    lines.append(f"{'false-alarm rate (benign images flagged)':<54} {_fmt_share(r['false_alarm_rate'])}")
    for what, path in r["figures"].items():
        lines.append(f"figure: {what.replace('_', ' ')} -> {path}")
    lines.extend(f"unreadable: {e['error']}" for e in r["errors"])
    return lines


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fmt_share_short(s: dict[str, Any]) -> str:
    return f"{'-' if s['share'] is None else format(s['share'], '.3f'):>8}"


# ---- bench --------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    import tempfile

    from models.bench import format_table, image_files, run_bench, synthetic_scans

    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        print(f"--threads: expected numbers like 1,2, got {args.threads!r}", file=sys.stderr)
        return USAGE
    if args.images is not None and not args.images.is_dir():
        print(f"{args.images}: not a folder", file=sys.stderr)
        return USAGE
    from station.kernel.detector import ModelError
    from station.kernel.imaging import ImageError

    try:
        if args.images is not None:
            report = run_bench(_model_dir(args), image_files(args.images), args.rounds, threads)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                report = run_bench(_model_dir(args), synthetic_scans(Path(tmp), args.count), args.rounds, threads)
    except ModelError as err:
        print(f"model: {err}", file=sys.stderr)
        return USAGE
    except ImageError as err:
        print(str(err), file=sys.stderr)
        return FAIL
    _emit(args, report, format_table(report))
    return FAIL if report["errors"] or (args.check and not report["ok"]) else OK


# ---- verify -------------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    model_dir = _model_dir(args)
    if not model_dir.is_dir():
        print(f"{model_dir}: not a folder", file=sys.stderr)
        return USAGE
    checks = verify_model(model_dir)
    ok = all(c["ok"] for c in checks)
    lines = [f"{'pass' if c['ok'] else 'FAIL':<5} {c['check']:<10} {c['detail']}" for c in checks]
    _emit(args, {"model": str(model_dir), "ok": ok, "checks": checks}, [f"model {model_dir}", *lines])
    return OK if ok else FAIL


def verify_model(model_dir: Path) -> list[dict[str, Any]]:
    """Each check as {check, ok, detail}; checks that need an earlier one are skipped (not
    listed) when it failed. Unlike Detector.load, a failed check does not stop the next: a manifest
    out of bounds still gets its sha256 and pin checked, a hash mismatch its shape checks."""
    import hashlib

    import numpy as np
    import onnxruntime as ort

    from station.kernel.detector import Manifest, ModelError, parse_manifest, pin_problem, read_content

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append({"check": name, "ok": ok, "detail": detail})
        return ok

    path = model_dir / "manifest.json"
    try:
        content = read_content(path)
    except ModelError as err:
        check("manifest", False, str(err).replace("\n", "; "))
        return checks
    m: Manifest | None = None
    try:
        m = parse_manifest(content, path)
    except ModelError as err:
        check("manifest", False, str(err))
    else:
        check("manifest", True,
              f"{m.name} {m.version}, {len(m.classes)} classes, input {m.input_size[0]}x{m.input_size[1]}")
    onnx = model_dir / (m.onnx_file if m else str(content.get("onnx_file", "model.onnx")))
    want = m.sha256 if m else str(content.get("sha256"))
    try:
        blob = onnx.read_bytes()
    except OSError as err:
        check("sha256", False, f"{onnx}: cannot read: {err.strerror}")
        return checks
    digest = hashlib.sha256(blob).hexdigest()
    if digest == want.lower():
        check("sha256", True, f"{digest[:12]} matches the manifest")
    else:
        check("sha256", False, f"sha256 mismatch: manifest {want[:12]}... file {digest[:12]}...")
    problem = pin_problem(content, digest)
    check("pin", problem is None, problem or f"{content['pin'][:12]} covers the manifest and {onnx.name}")
    if m is None:
        return checks
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 4
    try:
        session = _onnx(lambda: ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"]))
    except ModelError as err:
        check("onnx", False, f"onnxruntime cannot load {onnx.name}: {err}".splitlines()[0])
        return checks
    want_in = [1, 3, *m.input_size]
    got_in = session.get_inputs()[0].shape
    in_ok = len(got_in) == 4 and all(not isinstance(g, int) or g == w for g, w in zip(got_in, want_in, strict=True))
    check("input", in_ok, f"{got_in}, manifest wants {want_in}")
    n_out = 4 + len(m.classes)
    got_out = session.get_outputs()[0].shape
    out_ok = len(got_out) == 3 and (not isinstance(got_out[1], int) or got_out[1] == n_out)
    check("output", out_ok, f"{got_out}, manifest wants [1, {n_out}, N] (4 + {len(m.classes)} classes)")
    try:
        out = np.asarray(_onnx(lambda: session.run(None, {session.get_inputs()[0].name:
                                                          np.zeros(want_in, np.float32)}))[0])
    except ModelError as err:
        check("inference", False, f"a blank input failed: {err}".splitlines()[0])
        return checks
    good = out.ndim == 3 and out.shape[:2] == (1, n_out) and bool(np.isfinite(out).all())
    check("inference", good,
          f"blank input -> output {list(out.shape)}{'' if np.isfinite(out).all() else ', not finite'}")
    return checks


def _onnx(call: Callable[[], Any]) -> Any:
    """Run an onnxruntime call; its errors (no common base class) become ModelError."""
    from station.kernel.detector import ModelError

    try:
        return call()
    except Exception as err:
        raise ModelError(str(err)) from err


# ---- pin ----------------------------------------------------------------------------------------


def _pin(args: argparse.Namespace) -> int:
    """Write the pin of a reviewed manifest; refuse one that fails validation or its sha256."""
    from station.kernel.detector import ModelError, read_content, write_manifest

    path = args.dir / "manifest.json"
    if not path.is_file():
        print(f"{path}: no such manifest", file=sys.stderr)
        return USAGE
    try:
        content = read_content(path)
    except ModelError as err:
        print(str(err), file=sys.stderr)
        return USAGE
    old = content.get("pin")
    try:
        new = write_manifest(args.dir, content)
    except ModelError as err:
        print(f"refused, not pinned: {err}", file=sys.stderr)
        return FAIL
    lines = [f"model {args.dir}", f"old pin {old or '(none)'}",
             f"new pin {new}" + (" (unchanged)" if old == new else "")]
    _emit(args, {"model": str(args.dir), "old_pin": old, "pin": new}, lines)
    return OK
