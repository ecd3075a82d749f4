"""Seed 004's EEG-to-LLM classifier: a causal LM backbone with LoRA reads EEG token sequences;
mean + max pooling of its last hidden states, concatenated, feed one linear layer whose logits
split into one group per target (valence, arousal: 2 or 3 classes each).

Backbone: ``llm_path`` (a local ``save_pretrained`` directory of a Llama-family model; nothing
downloads) or, with none, a tiny random Llama configuration (:data:`TINY_LLAMA`), initialised from
a fixed seed so that serving rebuilds exactly the backbone the run trained on. Only the decoder
stack (``AutoModel``) is loaded: the LM head and its vocabulary-sized logits are never computed.

LoRA (peft) wraps the attention and MLP projections. ``load_in_4bit`` loads the backbone's linear
layers as NF4 through bitsandbytes (compute dtype bfloat16) and prepares it for k-bit training.
For the first ``freeze_epochs`` epochs only LoRA and the head train; from then on the backbone's
floating-point weights train as well (seed 004; 4-bit layers stay frozen: they cannot take
gradients).

The checkpoint (``state_dict``) holds what training changed: the LoRA adapter, the head, and,
once the backbone has been unfrozen, the backbone's trained weights; never the untouched
backbone, which is rebuilt from ``llm_path`` or the tiny configuration.
"""

from __future__ import annotations

import logging
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emoexp.models.registry import register_model

log = logging.getLogger(__name__)

TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY_INIT_SEED = 20240404


def llm_config(llm_path: str, vocab_size: int) -> dict[str, Any]:
    """The backbone's configuration as a dict: ``llm_path``'s config.json, or the tiny one."""
    if not llm_path:
        return {**TINY_LLAMA, "vocab_size": int(vocab_size)}
    from transformers import AutoConfig

    p = Path(llm_path)
    if not (p / "config.json").is_file():
        raise ValueError(f"{p}: no config.json; llm_path must be a local save_pretrained directory "
                         "of a causal LM (e.g. Llama-3.1-8B-Instruct downloaded beforehand)")
    return AutoConfig.from_pretrained(str(p)).to_dict()


def load_tokenizer(llm_path: str):
    """The tokenizer saved beside ``llm_path``'s weights (ValueError naming the folder if none)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(llm_path))
    except (OSError, ValueError) as e:
        raise ValueError(f"{llm_path}: no usable tokenizer files ({e})") from None


def _quantization(load_in_4bit: bool):
    if not load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise ValueError(f"load_in_4bit needs the bitsandbytes package ({e}); pip install bitsandbytes") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=False)


def resolve_dtype(name: str, load_in_4bit: bool) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, float32 on CPU (4-bit: the non-quantized layers in bfloat16)."""
    if name == "auto":
        return torch.bfloat16 if (torch.cuda.is_available() or load_in_4bit) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_backbone(config: dict[str, Any], llm_path: str = "", *, load_in_4bit: bool = False,
                   dtype: torch.dtype = torch.float32):
    """The decoder stack (``AutoModel``): from ``llm_path``, or the tiny config from a fixed seed."""
    from transformers import AutoConfig, AutoModel

    quant = _quantization(load_in_4bit)
    if llm_path:
        kwargs: dict[str, Any] = {"dtype": dtype}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map="cuda" if torch.cuda.is_available() else "cpu")
        try:
            return AutoModel.from_pretrained(str(llm_path), **kwargs)
        except OSError as e:
            raise ValueError(f"{llm_path}: cannot load the model weights ({e})") from None
    cfg = AutoConfig.for_model(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_INIT_SEED)
        model = AutoModel.from_config(cfg)
    if quant is None:
        return model.to(dtype)
    # bitsandbytes quantizes while loading: save the seeded tiny model and load it back in 4-bit
    with tempfile.TemporaryDirectory(prefix="emoexp-tiny-llm-") as tmp:
        model.save_pretrained(tmp)
        return AutoModel.from_pretrained(tmp, quantization_config=quant, dtype=dtype,
                                         device_map="cuda" if torch.cuda.is_available() else "cpu")


def _example() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The tiny offline random Llama over a 40-symbol vocabulary, LoRA rank 2."""
    kwargs = dict(heads={"valence": 2, "arousal": 3}, llm=llm_config("", vocab_size=40), lora_r=2, lora_alpha=4,
                  freeze_epochs=0)
    return kwargs, {"tokens": torch.randint(0, 40, (2, 24))}


@register_model("eeg_llm", family="network", example=_example)
class EEGLLMNet(nn.Module):
    """LoRA-adapted LM over EEG tokens -> {head: logits}."""

    def __init__(self, heads: dict[str, int], llm: dict[str, Any], *, llm_path: str = "",
                 load_in_4bit: bool = False, lora_r: int = 16, lora_alpha: int = 8, lora_dropout: float = 0.1,
                 freeze_epochs: int = 10, dtype: torch.dtype = torch.float32):
        super().__init__()
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        self._source = {"config": llm, "llm_path": llm_path, "load_in_4bit": load_in_4bit, "dtype": dtype}
        backbone = build_backbone(llm, llm_path, load_in_4bit=load_in_4bit, dtype=dtype)
        if load_in_4bit:
            backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=False)
        lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=[t for t in LORA_TARGETS if _has_module(backbone, t)])
        self.backbone = get_peft_model(backbone, lora)
        hidden = int(llm.get("hidden_size") or backbone.config.hidden_size)
        self.heads = dict(heads)
        self.head = nn.Linear(2 * hidden, sum(heads.values()))
        self.freeze_epochs = int(freeze_epochs)
        # whether the backbone has trained (it then belongs in the checkpoint); saved with it
        self.register_buffer("backbone_trained", torch.zeros((), dtype=torch.bool))
        self.set_backbone_trainable(False)

    # -- training phases ----------------------------------------------------------------------
    def _backbone_params(self):
        for name, p in self.backbone.named_parameters():
            if "lora_" not in name and p.dtype.is_floating_point:
                yield name, p

    def set_backbone_trainable(self, on: bool) -> None:
        for _, p in self._backbone_params():
            p.requires_grad_(on)
        if on:
            self.backbone_trained.fill_(True)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Everything that ever trains (LoRA, head, the float backbone weights): frozen parameters
        get no gradient, so the optimizer skips them until they are unfrozen."""
        lora = [p for n, p in self.backbone.named_parameters() if "lora_" in n]
        return lora + list(self.head.parameters()) + [p for _, p in self._backbone_params()]

    def start_epoch(self, epoch: int) -> None:
        """Called by the engine before each training epoch (1-based): unfreeze after freeze_epochs."""
        unfreeze = epoch > self.freeze_epochs
        if unfreeze != getattr(self, "_unfrozen", None):
            log.info("epoch %d: backbone %s", epoch, "unfrozen: LoRA, head and backbone train" if unfreeze
                     else f"frozen until epoch {self.freeze_epochs}: LoRA and head train")
        self._unfrozen = unfreeze
        self.set_backbone_trainable(unfreeze)

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["tokens"]
        h = self.backbone(input_ids=ids).last_hidden_state.float()
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)
        logits = self.head(pooled)
        return dict(zip(self.heads, torch.split(logits, list(self.heads.values()), dim=-1)))

    # -- checkpoint: what training changed ----------------------------------------------------
    def _saved_names(self) -> set[str]:
        names = {n for n, _ in self.named_parameters() if "lora_" in n or n.startswith("head.")}
        names.add("backbone_trained")
        if bool(self.backbone_trained):
            names |= {"backbone." + n for n, _ in self._backbone_params()}
        return names

    def state_dict(self, *args, **kwargs):
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        keep = self._saved_names()
        return OrderedDict((k, v) for k, v in full.items() if k[len(prefix):] in keep)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if bool(self.backbone_trained) and not any(k.startswith("backbone.") and "lora_" not in k
                                                   for k in state_dict):
            # a state from the frozen phase (say, best.pt of an early epoch) after the backbone
            # trained here: it means the untouched backbone, so bring that back first
            self._restore_pristine_backbone()
        missing, unexpected = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            needed = {n for n, _ in self.named_parameters() if "lora_" in n or n.startswith("head.")}
            lacking = sorted(needed & set(missing))
            if lacking or unexpected:
                raise RuntimeError(f"checkpoint does not fit this EEG-LLM model: missing {lacking[:5]}, "
                                   f"unexpected {sorted(unexpected)[:5]} (another llm_path or LoRA rank?)")
        return missing, unexpected


    def _restore_pristine_backbone(self) -> None:
        """Reload the backbone's float weights from their source (``llm_path`` or the tiny seed)."""
        src = self._source
        fresh = build_backbone(src["config"], src["llm_path"], load_in_4bit=src["load_in_4bit"], dtype=src["dtype"])
        pristine = fresh.state_dict()
        with torch.no_grad():
            for name, p in self._backbone_params():
                key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
                p.copy_(pristine[key].to(p.device, p.dtype))
        del fresh, pristine
        self.backbone_trained.fill_(False)


def _has_module(model, suffix: str) -> bool:
    return any(name.endswith("." + suffix) for name, _ in model.named_modules())
