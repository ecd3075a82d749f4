"""A Hugging Face image classifier as the whole face network (seed 003: a ViT fine-tuned on FER,
``dima806/facial_emotions_image_detection``).

``backbone=hf`` with ``hf_model=PATH``: PATH is a local ``save_pretrained`` folder of any
``AutoModelForImageClassification`` (its ``config.json``, weights and ``preprocessor_config.json``);
nothing is downloaded. The network is that model, its classifier sized to the task's classes:

* :func:`hf_spec` reads the folder's config and image processor once, at data time: the side
  images are resized to (the processor's ``size``, or ``crop_size`` when it centre-crops) and its
  rescaling and normalisation. The spec travels in the run's info, so a checkpoint rebuilds the
  network (:class:`FaceHF`, from the config alone) and serves without the folder.
* :func:`load_hf_weights` loads the folder's weights; where the model's labels differ from the
  task's, its classifier is replaced, and the rows of the labels both know (by name: ``angry`` is
  ``anger``) are carried over.

Inputs arrive as emoexp's face pipeline makes them (resized to the spec's side, normalised with
ImageNet's mean and std, augmented in training); :class:`FaceHF` turns them into the pixel values
the model's own processor would have made before calling it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emoexp.models.registry import register_model


def _tiny_vit_spec(n_labels: int = 3) -> dict[str, Any]:
    """A small random ViT's spec (contract tests; also what tests save with ``save_pretrained``)."""
    from transformers import ViTConfig

    labels = ["angry", "happy", "sad", "neutral", "fear", "surprise", "disgust"][:n_labels]
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=n_labels, id2label=dict(enumerate(labels)),
                       label2id={c: i for i, c in enumerate(labels)})
    return {"config": config.to_dict(), "size": 32, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
            "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True, "labels": labels, "source": ""}


def hf_spec(path: str | os.PathLike) -> dict[str, Any]:
    """What the network and its inputs need from a local model folder: its config (a dict), its
    labels (``id2label`` order), and its processor's side, rescaling and normalisation.
    ValueError naming the folder when it is not a local image classifier."""
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    p = Path(os.fspath(path)).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ValueError(f"hf_model={path}: not a local model folder (no config.json). Nothing is downloaded: "
                         "save the model once with save_pretrained (or `hf download NAME --local-dir DIR`) "
                         "and give that folder")
    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable config gets the same clear message
        raise ValueError(f"hf_model={path}: unreadable config.json ({type(e).__name__}: {e})") from None
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(f"hf_model={path}: a {config.model_type!r} model, not an image classifier "
                         "(AutoModelForImageClassification)")
    try:
        proc = AutoImageProcessor.from_pretrained(p, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"hf_model={path}: no usable image processor (preprocessor_config.json: "
                         f"{type(e).__name__}: {e})") from None
    return {"config": config.to_dict(), "size": _processor_side(proc, path),
            "image_mean": [float(v) for v in _triple(getattr(proc, "image_mean", None) or [0.0] * 3)],
            "image_std": [float(v) for v in _triple(getattr(proc, "image_std", None) or [1.0] * 3)],
            "rescale_factor": float(getattr(proc, "rescale_factor", 1 / 255) or 1 / 255),
            "do_rescale": bool(getattr(proc, "do_rescale", True)),
            "do_normalize": bool(getattr(proc, "do_normalize", True)),
            "labels": [str(config.id2label[i]) for i in range(config.num_labels)], "source": str(p)}


def _triple(v) -> list[float]:
    v = [float(x) for x in (v if isinstance(v, list | tuple) else [v])]
    return v * 3 if len(v) == 1 else v


def _processor_side(proc, path) -> int:
    """The square side the processor hands the model: crop_size when it centre-crops, else size."""
    def side(d) -> int | None:
        if d is None:
            return None
        if isinstance(d, int):
            return d
        d = dict(d) if not isinstance(d, dict) else d
        h, w = d.get("height"), d.get("width")
        if h and w:
            if h != w:
                raise ValueError(f"hf_model={path}: the processor makes {h}x{w} images; emoexp's face "
                                 "pipeline makes square ones")
            return int(h)
        return int(d["shortest_edge"]) if d.get("shortest_edge") else None

    got = side(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    got = got or side(getattr(proc, "size", None))
    if not got:
        raise ValueError(f"hf_model={path}: the image processor names no image size")
    return got


def _same_label(a: str, b: str) -> bool:
    from emoexp.data.faces import canonical_class

    ca, cb = canonical_class(a), canonical_class(b)
    return (ca or a.strip().lower()) == (cb or b.strip().lower())


def _model_config(spec: dict[str, Any], classes: list[str]):
    from transformers import AutoConfig

    cfg = dict(spec["config"])
    model_type = cfg.pop("model_type")
    for key in ("id2label", "label2id", "num_labels", "transformers_version", "architectures"):
        cfg.pop(key, None)
    return AutoConfig.for_model(model_type, **cfg, id2label=dict(enumerate(classes)),
                                label2id={c: i for i, c in enumerate(classes)})


@register_model("face_hf", family="network", option="hf",
                example=lambda: (dict(spec=_tiny_vit_spec(), heads={"emotion": 4}), {"image": torch.randn(2, 3, 32, 32)}))
class FaceHF(nn.Module):
    """A Hugging Face image classifier over emoexp's face batches: ``{"image": (B, 3, S, S)}``
    (ImageNet-normalised) -> ``{head: logits (B, n)}``, built from ``spec`` (:func:`hf_spec`)
    with random weights (:func:`load_hf_weights` loads the folder's)."""

    def __init__(self, spec: dict[str, Any], heads: dict[str, int], classes: list[str] | None = None):
        super().__init__()
        from transformers import AutoModelForImageClassification

        from emoexp.data.images import IMAGENET_MEAN, IMAGENET_STD

        (self.head, n), = heads.items()
        classes = list(classes or [f"class_{k}" for k in range(n)])
        if len(classes) != n:
            raise ValueError(f"face_hf: {len(classes)} class names for a head of {n}")
        self.net = AutoModelForImageClassification.from_config(_model_config(spec, classes))
        # our input x = (p/255 - m)/s  ->  the processor's (p * rescale - mean) / std, one affine map
        scale = 255.0 * (spec["rescale_factor"] if spec["do_rescale"] else 1.0)
        mean = torch.tensor(spec["image_mean"] if spec["do_normalize"] else [0.0] * 3)
        std = torch.tensor(spec["image_std"] if spec["do_normalize"] else [1.0] * 3)
        m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("in_scale", (scale * s_in / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((scale * m_in - mean) / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["image"] * self.in_scale + self.in_shift
        return {self.head: self.net(pixel_values=x).logits}


def load_hf_weights(model: FaceHF, path: str | os.PathLike, classes: list[str]) -> dict[str, Any]:
    """Load the folder's weights into ``model``. Its classifier is kept when its labels are the
    task's classes (in any order: rows are matched by name); otherwise it is replaced and the rows
    of the labels both know are carried over. Returns what happened (for the run's tags)."""
    from transformers import AutoModelForImageClassification

    src = AutoModelForImageClassification.from_pretrained(os.fspath(path), local_files_only=True)
    theirs = [str(src.config.id2label[i]) for i in range(src.config.num_labels)]
    state = src.state_dict()
    # the classifier's tensors: those whose shape follows the number of labels
    with torch.device("meta"):
        other = AutoModelForImageClassification.from_config(_model_config(
            {"config": src.config.to_dict()}, [*theirs, "_extra"]))
    head_keys = {k for k, v in other.state_dict().items() if k in state and tuple(v.shape) != tuple(state[k].shape)}
    own = model.net.state_dict()
    rows = {k: next((j for j, t in enumerate(theirs) if _same_label(c, t)), None) for k, c in enumerate(classes)}
    new = {}
    for key, value in own.items():
        if key not in state:
            raise ValueError(f"hf_model={path}: its weights have no {key!r} (a different architecture?)")
        if key in head_keys:
            v = value.clone()
            for k, j in rows.items():
                if j is not None:
                    v[k] = state[key][j]
            new[key] = v
        elif tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"hf_model={path}: {key} is {tuple(state[key].shape)}, the model expects {tuple(value.shape)}")
        else:
            new[key] = state[key]
    model.net.load_state_dict(new)
    mapped = [c for k, c in enumerate(classes) if rows[k] is not None]
    same = len(mapped) == len(classes) == len(theirs)
    return {"labels": theirs, "mapped": mapped, "head": "kept" if same else "replaced",
            "summary": ("its classifier (labels mapped by name)" if same else
                        f"a new classifier; {len(mapped)} of {len(classes)} classes carried over by name "
                        f"({', '.join(mapped) or 'none'})")}
