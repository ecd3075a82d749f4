#!/usr/bin/env python
"""EEG-LLM (train_eeg_llm): tokens per second for training and inference on CPU, and backbone
memory with and without 4-bit loading.

1. **Throughput**, the task's model (``EEGLLMNet``) with the tiny random Llama (``TINY_LLAMA``:
   64 wide, 2 layers) on random EEG token sequences of the task's default length
   (``--window-size`` 128 / ``--downsample`` 4: 1 + 32 x 33 = 1057 tokens), batch ``--batch-size``:
   * ``train, LoRA only``  forward, cross-entropy on both heads, backward, AdamW step, with the
     backbone frozen (the first ``freeze_epochs``);
   * ``train, unfrozen``   the same after the backbone unfreezes (every float weight trains);
   * ``inference``         eval mode, no gradients;
   * the same three with the backbone loaded in 4-bit NF4 (bitsandbytes on CPU, bfloat16 compute).
   Tokens/s = batch x sequence length x steps / seconds, after ``--warmup`` steps.
2. **Memory**, one backbone (``--mem-hidden`` wide, ``--mem-layers`` layers, a 32000-token
   vocabulary: a scaled-down Llama) saved once, then loaded in a fresh process per variant
   (float32, bfloat16, 4-bit NF4): ``get_memory_footprint()`` of the loaded model (its weights
   and buffers) and the growth of the process's resident set across the load and one short
   forward pass (which reads every memory-mapped weight), after a tiny model was loaded the same
   way so that the libraries' own memory is not counted. The resident set also holds what the
   allocator kept from loading (4-bit quantizes from full-precision copies).

torch threads: ``--threads`` (default 2). Nothing is asserted. Results: benchmarks/results/bench_eeg_llm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, table, wait_for_load, write_result  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--batch-size", type=int, default=8, help="the task's default, 8")
    p.add_argument("--window-size", type=int, default=128)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant (default 6)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mem-hidden", type=int, default=1024)
    p.add_argument("--mem-layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-load", type=float, default=0.0, help="wait up to N s for load average < 0.5")
    p.add_argument("--out", default=None)
    p.add_argument("--load-one", nargs=3, metavar=("WARM", "DIR", "VARIANT"), help=argparse.SUPPRESS)  # child
    return p.parse_args(argv)


def _throughput(args) -> list[dict]:
    import torch

    from emoexp.data.eeg_tokens import own_token_map
    from emoexp.models.eeg_llm import TINY_LLAMA, EEGLLMNet, resolve_dtype

    tm = own_token_map(16)
    steps_per_window = -(-args.window_size // args.downsample)
    seq = len(tm.layout(steps_per_window)[0])
    heads = {"valence": 2, "arousal": 2}
    rows = []
    for four_bit in (False, True):
        model = EEGLLMNet(heads, {**TINY_LLAMA, "vocab_size": tm.vocab_size}, load_in_4bit=four_bit,
                          freeze_epochs=1, dtype=resolve_dtype("auto", four_bit))
        opt = torch.optim.AdamW(model.optimizer_parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, tm.vocab_size, (args.batch_size, seq), generator=gen)
        y = torch.randint(0, 2, (args.batch_size,), generator=gen)

        for name, epoch, train in (("train, LoRA only", 1, True), ("train, unfrozen", 2, True),
                                   ("inference", 2, False)):
            model.start_epoch(epoch)
            model.train(train)
            dt, load = _timed(model, opt, tokens, y, train, args)
            rows.append({"backbone": "4-bit NF4" if four_bit else "float32", "variant": name,
                         "trainable_params": model.trainable_count() if train else 0,
                         "tokens_per_s": args.batch_size * seq * args.steps / dt,
                         "windows_per_s": args.batch_size * args.steps / dt, "seq_len": seq,
                         "other_load": round(load, 3)})
            print(f"  {rows[-1]['backbone']:>9} {name:<17} {rows[-1]['tokens_per_s']:9.0f} tokens/s", flush=True)
    return rows


def _timed(model, opt, tokens, y, train: bool, args) -> tuple[float, float]:
    """Seconds for ``args.steps`` steps (after ``args.warmup``), and the other processes' CPU share."""
    import torch

    def step():
        if not train:
            with torch.no_grad():
                model({"tokens": tokens})
            return
        out = model({"tokens": tokens})
        loss = sum(torch.nn.functional.cross_entropy(o, y) for o in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    with Contention() as c:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        dt = time.perf_counter() - t0
    return dt, c.foreign


def _load_one(warm: str, path: str, variant: str) -> None:
    """Child process: load the saved backbone one way, print its footprint and RSS growth. A tiny
    model is loaded the same way first, so the libraries' own memory is not counted."""
    import psutil
    import torch
    from transformers import AutoModel, BitsAndBytesConfig

    proc = psutil.Process()
    kwargs = {"float32": {"dtype": torch.float32}, "bfloat16": {"dtype": torch.bfloat16},
              "4bit": {"dtype": torch.bfloat16, "device_map": "cpu",
                       "quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                 bnb_4bit_compute_dtype=torch.bfloat16)}}[variant]
    ids = torch.zeros((1, 16), dtype=torch.long)
    with torch.no_grad():
        AutoModel.from_pretrained(warm, **kwargs)(input_ids=ids)
    before = proc.memory_info().rss
    model = AutoModel.from_pretrained(path, **kwargs)
    with torch.no_grad():  # touches every weight (safetensors are memory-mapped until read)
        model(input_ids=ids)
    after = proc.memory_info().rss
    print(json.dumps({"variant": variant, "footprint_mb": model.get_memory_footprint() / 2**20,
                      "rss_growth_mb": (after - before) / 2**20,
                      "params_m": sum(p.numel() for p in model.parameters()) / 1e6}))


def _memory(args, tmp: Path) -> list[dict]:
    import torch
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.mem_hidden, intermediate_size=int(args.mem_hidden * 2.75),
                      num_hidden_layers=args.mem_layers, num_attention_heads=max(1, args.mem_hidden // 64),
                      num_key_value_heads=max(1, args.mem_hidden // 256))
    torch.manual_seed(0)
    LlamaModel(cfg).save_pretrained(tmp / "backbone")
    LlamaModel(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                           num_attention_heads=1, num_key_value_heads=1)).save_pretrained(tmp / "warm")
    rows = []
    for variant in ("float32", "bfloat16", "4bit"):
        out = subprocess.run([sys.executable, __file__, "--load-one", str(tmp / "warm"), str(tmp / "backbone"), variant],
                             capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {variant:>8}: footprint {rows[-1]['footprint_mb']:.0f} MB, RSS +{rows[-1]['rss_growth_mb']:.0f} MB",
              flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.load_one:
        _load_one(*args.load_one)
        return 0
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    waited = wait_for_load(args.wait_load, 0.5) if args.wait_load else {}
    print("throughput (tiny Llama, CPU):", flush=True)
    speed = _throughput(args)
    print("memory (one backbone, three loads):", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        memory = _memory(args, Path(tmp))
    print()
    print(table([[r["backbone"], r["variant"], r["tokens_per_s"], r["windows_per_s"], r["trainable_params"],
                  r["other_load"]] for r in speed],
                ["backbone", "variant", "tokens/s", "windows/s", "trainable", "other load"]))
    print()
    base = next(r for r in memory if r["variant"] == "float32")
    print(table([[r["variant"], r["params_m"], r["footprint_mb"], r["rss_growth_mb"],
                  base["footprint_mb"] / r["footprint_mb"]] for r in memory],
                ["load", "params (M)", "footprint MB", "RSS growth MB", "float32 / this"]))
    path = write_result("bench_eeg_llm", {"args": {k: v for k, v in vars(args).items() if k != "load_one"},
                                          "throughput": speed, "memory": memory, **waited}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
