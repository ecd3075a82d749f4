"""Metrics and evaluation artifacts (confusion matrix, per-class report, ROC, curves).

scikit-learn computes the metrics; matplotlib draws the images (headless, Agg).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.io import atomic_write_text


def predict(model, dataset, heads: dict[str, list[str]], device, batch_size: int, collate) -> dict[str, dict]:
    """Run ``model`` over ``dataset`` in order; per head: probs (N, C), targets (N,), mean loss."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    # Preallocated to the dataset's size: appending per-batch arrays fragments the heap and
    # kept ~35 KB per window resident after validation on full-scale FACED (benchmarks/).
    n_total = len(dataset)
    probs = {h: np.zeros((n_total, len(c)), dtype=np.float32) for h, c in heads.items()}
    targets = {h: np.zeros(n_total, dtype=np.int64) for h in heads}
    losses = {h: 0.0 for h in heads}
    n = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
            out = model(batch)
            b = int(batch[next(iter(heads))].shape[0])
            for h in heads:
                y = batch[h]
                losses[h] += float(torch.nn.functional.cross_entropy(out[h], y, reduction="sum"))
                probs[h][n : n + b] = torch.softmax(out[h].float(), dim=-1).cpu().numpy()
                targets[h][n : n + b] = y.cpu().numpy()
            n += b
    model.train()
    return {h: {"probs": probs[h][:n], "targets": targets[h][:n], "loss": losses[h] / max(n, 1)} for h in heads}


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class F1 (scikit-learn), over all classes even if absent."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(len(class_names)))
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "f1": {c: float("nan") for c in class_names}}
    y_pred = probs.argmax(axis=1)
    per = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1": {c: float(f) for c, f in zip(class_names, per, strict=True)},
    }


def write_eval_artifacts(model, dataset, heads, device, batch_size, collate, out_dir: Path, split: str,
                         history: list[dict[str, float]] | None = None, preds: dict | None = None) -> dict:
    """Confusion matrix (PNG + CSV), per-class report (txt + json), ROC (PNG) per head; curves.
    ``preds`` (from :func:`predict` on ``dataset``) saves a second pass over the data; the
    predictions used are returned."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if preds is None:
        preds = predict(model, dataset, heads, device, batch_size, collate)
    primary = next(iter(heads))
    for head, classes in heads.items():
        prefix = "" if head == primary else f"{head}."
        p = preds[head]
        report_files(p["targets"], p["probs"], classes, out_dir, prefix, title=f"{head} ({split})")
    if history:
        plot_curves(history, out_dir / "training_curves.png")
    return preds


def report_files(y_true, probs, classes: list[str], out_dir: Path, prefix: str = "", title: str = "") -> None:
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    csv = io.StringIO()
    np.savetxt(csv, cm, fmt="%d", delimiter=",", header=",".join(classes), comments="")
    atomic_write_text(out_dir / f"{prefix}confusion_matrix.csv", csv.getvalue())
    report = classification_report(y_true, y_pred, labels=labels, target_names=classes,
                                    zero_division=0, output_dict=True)
    atomic_write_text(out_dir / f"{prefix}classification_report.json", json.dumps(report, indent=2))
    atomic_write_text(out_dir / f"{prefix}classification_report.txt",
                      classification_report(y_true, y_pred, labels=labels, target_names=classes,
                                            zero_division=0))
    _plot_confusion(cm, classes, out_dir / f"{prefix}confusion_matrix.png", title)
    _plot_roc(y_true, probs, classes, out_dir / f"{prefix}roc.png", title)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix {title}")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_roc(y_true, probs, classes: list[str], path: Path, title: str) -> None:
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for k, c in enumerate(classes):
        pos = np.asarray(y_true) == k
        if pos.all() or not pos.any():
            continue  # one-vs-rest needs both positives and negatives
        fpr, tpr, _ = roc_curve(pos, probs[:, k])
        ax.plot(fpr, tpr, label=f"{c} (AUC {auc(fpr, tpr):.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC one-vs-rest {title}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    plt = _plt()
    epochs = list(range(1, len(history) + 1))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train_loss", "val_loss"):
        if all(key in h for h in history):
            a.plot(epochs, [h[key] for h in history], label=key)
    for key in ("val_accuracy", "val_macro_f1"):
        if all(key in h for h in history):
            b.plot(epochs, [h[key] for h in history], label=key)
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
