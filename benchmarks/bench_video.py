#!/usr/bin/env python
"""Per-frame latency of the video pipeline on CPU: decode, face detection, classification.

1. Writes a drawn-face video (``emoexp.data.synth_faces.synth_face_video``: ``--seconds`` long,
   25 fps, ``--width`` x ``--height``, face ``--face-size`` px) in a temporary folder.
2. Samples it at ``--fps`` with ``emoexp.data.frames.iter_frames``; **decode** is the time from one
   sampled frame to the next (grabbing the skipped frames, decoding, BGR->RGB).
3. On each sampled frame: **detect** = ``HaarDetector.detect`` (the ``auto`` choice: it tracks
   the face, scanning only around the last one and the whole frame every 10th frame or when
   lost), next to a whole-frame scan on every frame (``track=False``) for reference;
   **crop** = square crop + resize to 128 (what ``predict_video`` hands the classifier).
4. **classify** = preprocessing as served (``emoexp.data.images.preprocess``: resize, ImageNet
   normalisation) + forward + softmax, random weights, 6 classes, for
   * ``small_cnn``   ``face_small_cnn`` encoder + linear head, at ``--small-size`` px (48);
   * ``densenet121`` ``face_densenet121`` (torchvision DenseNet121, weights=None) + linear head,
                     at each of ``--densenet-sizes`` px (48 and 96),
   with batch 1 (streaming: one call per frame) and batched (``--batch`` frames per call,
   reported per frame). Calls are interleaved model by model over the same crops.
5. ``predict_video`` end to end (Haar, small CNN, batch ``--batch``): wall time per frame.

Per-frame "detect + classify" pairs each frame's detection and crop time with its batch-1
classification time. Target (issue): small CNN, detection + classification p50 <= 20 ms per
frame. torch threads: ``--threads`` or the process default (printed). Nothing is asserted.
Results: benchmarks/results/bench_video.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, table, verdict, wait_quiet, write_result  # noqa: E402

TARGET_P50_MS = 20.0
N_CLASSES = 6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seconds", type=float, default=24.0, help="video length (default 24 s)")
    p.add_argument("--fps", type=float, default=5.0, help="sampling rate, frames per second (default 5)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    p.add_argument("--face-size", type=int, default=220, help="drawn face size in px (default 220)")
    p.add_argument("--batch", type=int, default=16, help="frames per batched call (default 16)")
    p.add_argument("--small-size", type=int, default=48, help="small CNN input px (default 48)")
    p.add_argument("--densenet-sizes", default="48,96", help="DenseNet121 input px, comma-separated (default 48,96)")
    p.add_argument("--no-densenet", action="store_true", help="skip DenseNet121")
    p.add_argument("--warmup", type=int, default=5, help="discarded calls per model first (default 5)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: the process default, usually the core count)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before measuring, wait up to this many seconds for other processes to use "
                        "< 15%% of the CPUs (default 0: do not wait)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_video.json)")
    return p.parse_args(argv)


def pct(xs: list[float], q: float) -> float:
    """Percentile (nearest rank on the sorted sample), in the units of xs."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": sum(ms) / len(ms)}


def make_video(tmp: Path, args) -> Path:
    from emoexp.data.synth_faces import synth_face_video

    labels = ["neutral", "happy", "sad", "anger", "surprise", "neutral"]
    seg = args.seconds / len(labels)
    return synth_face_video(tmp / "bench.mp4", seed=0, segments=[(e, seg) for e in labels],
                            fps=25, size=(args.width, args.height), face_size=args.face_size)


def build_classifiers(args):
    """name -> classify(crops (B, S, S, 3) uint8) -> (B, 6) probabilities."""
    import torch
    from torch import nn

    from emoexp.data.images import preprocess
    from emoexp.models import create_model

    torch.manual_seed(0)

    def wrap(encoder_name: str, size: int):
        enc = create_model(encoder_name)
        net = nn.Sequential(enc, nn.Linear(enc.latent_dim, N_CLASSES)).eval()
        n_params = sum(p.numel() for p in net.parameters())

        def classify(crops):
            with torch.inference_mode():
                x = preprocess(crops, size, grayscale=False)   # (B, 3, size, size) float32
                return torch.softmax(net(x), dim=1).numpy()

        return classify, n_params

    models = {f"small_cnn@{args.small_size}": wrap("face_small_cnn", args.small_size)}
    if not args.no_densenet:
        for s in (int(v) for v in args.densenet_sizes.split(",") if v.strip()):
            models[f"densenet121@{s}"] = wrap("face_densenet121", s)
    return models


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("emoexp").setLevel(logging.ERROR)
    import cv2
    import numpy as np
    import torch

    from emoexp.apps import predict_video as video
    from emoexp.data import frames as fr

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict = {"config": vars(args), "loadavg_at_start": loadavg(),
                    "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as td:
        path = make_video(Path(td), args)
        info = fr.video_info(path)
        det = fr.make_detector("auto")
        untracked = fr.HaarDetector(track=False) if isinstance(det, fr.HaarDetector) else None
        result["video"] = {**info, "detector": det.name}
        if args.quiet_wait > 0:
            result["foreign_cpu_before"] = wait_quiet(args.quiet_wait, probe_s=2.0)

        # Decode, detect, crop: one pass, each frame timed.
        frames, decode_ms, detect_ms, crop_ms, full_ms, found = [], [], [], [], [], 0
        with Contention() as c_front:
            it = fr.iter_frames(path, args.fps)
            while True:
                t0 = time.perf_counter()
                try:
                    _, _, frame = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                boxes = det.detect(frame)
                t2 = time.perf_counter()
                found += bool(boxes)
                box = boxes[0] if boxes else (0, 0, frame.shape[1], frame.shape[0])
                face = fr.crop(frame, box)
                face = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
                t3 = time.perf_counter()
                if untracked is not None:
                    untracked.detect(frame)
                    full_ms.append((time.perf_counter() - t3) * 1e3)
                decode_ms.append((t1 - t0) * 1e3)
                detect_ms.append((t2 - t1) * 1e3)
                crop_ms.append((t3 - t2) * 1e3)
                frames.append(np.ascontiguousarray(face))
        n = len(frames)
        crops = np.stack(frames)
        result["front"] = {"frames": n, "faces_found": found, "decode": summary(decode_ms),
                           "detect": summary(detect_ms), "crop_resize": summary(crop_ms),
                           "detect_untracked": summary(full_ms) if full_ms else None,
                           "detector_scans": {"full": getattr(det, "n_full", None),
                                              "local": getattr(det, "n_local", None)},
                           "foreign_cpu": c_front.foreign}
        print(f"{path.name}: {info['width']:.0f}x{info['height']:.0f} at {info['fps']:g} fps, "
              f"{n} frames sampled at {args.fps:g} fps, face found in {found}; torch threads "
              f"{torch.get_num_threads()}; load average {loadavg()}", flush=True)

        # Classification: batch 1 per frame, and batched; models interleaved frame by frame.
        models = build_classifiers(args)
        for fn, _ in models.values():
            for _ in range(args.warmup):
                fn(crops[:1])
                fn(crops[:args.batch])
        b1: dict[str, list[float]] = {k: [] for k in models}
        bb: dict[str, list[float]] = {k: [] for k in models}
        with Contention() as c_cls:
            for i in range(n):
                for k, (fn, _) in models.items():
                    t = time.perf_counter()
                    fn(crops[i:i + 1])
                    b1[k].append((time.perf_counter() - t) * 1e3)
            for i in range(0, n - args.batch + 1, args.batch):
                for k, (fn, _) in models.items():
                    t = time.perf_counter()
                    fn(crops[i:i + args.batch])
                    bb[k].append((time.perf_counter() - t) * 1e3 / args.batch)
        result["classify"] = {k: {"n_params": models[k][1], "batch1": summary(b1[k]),
                                  f"batch{args.batch}_per_frame": summary(bb[k])} for k in models}
        result["classify_foreign_cpu"] = c_cls.foreign
        front = [d + c for d, c in zip(detect_ms, crop_ms)]
        result["detect_plus_classify"] = {k: summary([f + x for f, x in zip(front, b1[k])]) for k in models}

        # predict_video end to end with the small CNN.
        small = next(iter(models))
        with Contention() as c_e2e:
            t = time.perf_counter()
            pred = video.predict_video(models[small][0], [f"c{i}" for i in range(N_CLASSES)], path,
                                       fps=args.fps, detector=det, batch_size=args.batch, progress=False)
            wall = time.perf_counter() - t
        result["predict_video"] = {"model": small, "frames": len(pred.frames), "wall_s": wall,
                                   "ms_per_frame": wall * 1e3 / len(pred.frames), "foreign_cpu": c_e2e.foreign}
    result["loadavg_after"] = loadavg()

    fr = result["front"]
    rows = [["decode (per sampled frame)", "-", "-", fr["decode"]["p50_ms"], fr["decode"]["p99_ms"]],
            [f"detect ({det.name}, as used)", "-", "-", fr["detect"]["p50_ms"], fr["detect"]["p99_ms"]],
            ["crop + resize to 128", "-", "-", fr["crop_resize"]["p50_ms"], fr["crop_resize"]["p99_ms"]]]
    if fr["detect_untracked"]:
        rows.insert(2, ["detect (Haar, whole frame every time)", "-", "-",
                        fr["detect_untracked"]["p50_ms"], fr["detect_untracked"]["p99_ms"]])
    for k, v in result["classify"].items():
        rows.append([f"classify {k}", 1, v["n_params"], v["batch1"]["p50_ms"], v["batch1"]["p99_ms"]])
        w = v[f"batch{args.batch}_per_frame"]
        rows.append([f"classify {k}", args.batch, v["n_params"], w["p50_ms"], w["p99_ms"]])
    for k, v in result["detect_plus_classify"].items():
        rows.append([f"detect + crop + classify {k}", 1, "", v["p50_ms"], v["p99_ms"]])
    e2e = result["predict_video"]
    rows.append([f"predict_video {e2e['model']} (wall / frames)", args.batch, "", e2e["ms_per_frame"], ""])
    scans = fr["detector_scans"]
    if scans["full"] is not None:
        print(f"\nHaar scans: {scans['full']} whole-frame, {scans['local']} around the last face")
    print(f"\nper frame, ms (other load: front {fr['foreign_cpu']:.0%}, classify "
          f"{result['classify_foreign_cpu']:.0%}, end to end {e2e['foreign_cpu']:.0%})")
    print(table(rows, ["stage", "batch", "params", "p50 ms", "p99 ms"]))
    p50 = result["detect_plus_classify"][small]["p50_ms"]
    print()
    print(table([[f"detect + classify p50, {small}, batch 1", f"{p50:.2f} ms", f"<= {TARGET_P50_MS:g} ms",
                  verdict(p50, TARGET_P50_MS, False)]], ["measure", "value", "target", "verdict"]))
    out = write_result("bench_video", result, args.out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
