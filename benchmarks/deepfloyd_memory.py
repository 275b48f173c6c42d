"""Memory plan for DeepFloyd IF (stage I + stage II + T5 text encoder) on a 15 GiB Colab T4.

Nothing of IF can be downloaded here, so the sizes are computed and the loading order is measured:

- T5 v1.1 XXL encoder: parameters counted exactly by building `T5EncoderModel` on the meta device from the
  published config of google/t5-v1_1-xxl (IF-I-XL's text_encoder/config.json is the same): d_model 4096,
  d_ff 10240, d_kv 64, 64 heads, 24 layers, vocabulary 32128, gated GELU.
- IF-I-XL and IF-II-L UNets: the parameter counts published on their model cards (4.3B and 1.2B).
- Which models are resident together in each plan is measured on the tiny random IF
  (`helpers.backends.tiny_deepfloyd`), run through the same loading code: after each step, every live
  `T5EncoderModel` and `UNet2DConditionModel` is found with the garbage collector.

Bytes = parameters x 2 in fp16 (x 4 in fp32). A plan fits when its peak of resident weights plus an
allowance for activations and the CUDA context stays under the T4's 15 GiB.

Run: .venv/bin/python benchmarks/deepfloyd_memory.py
"""
import gc
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from transformers import T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.backends import deepfloyd, tiny_deepfloyd

GIB = 2 ** 30
T4_GIB = 15.0
ALLOWANCE_GIB = 2.0  # activations at batch 2 (CFG) and the CUDA context: an assumption, not measured here
T5_XXL = T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                  feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
PUBLISHED = {"IF-I-XL UNet": 4.3e9, "IF-II-L UNet": 1.2e9}  # huggingface.co/DeepFloyd/IF-I-XL-v1.0, IF-II-L-v1.0 cards
PROMPTS = ["an oil painting of a snowy mountain village", "a man wearing a hat", "a rocket ship"]


def t5_xxl_parameters() -> int:
    """Exact parameter count of the T5-XXL encoder, built without memory on the meta device."""
    with torch.device("meta"):
        return sum(p.numel() for p in T5EncoderModel(T5_XXL).parameters())


def resident() -> frozenset[str]:
    """Names of the real models that the live tiny models stand for."""
    gc.collect()
    names = set()
    for obj in gc.get_objects():
        if isinstance(obj, T5EncoderModel):
            names.add("T5-XXL encoder")
        elif isinstance(obj, UNet2DConditionModel):
            names.add("IF-I-XL UNet" if obj.config.sample_size == 64 else "IF-II-L UNet")
    return frozenset(names)


def measured(loaders, steps: list) -> list[frozenset[str]]:
    """Wrap each loader so that what is resident right after it ran is recorded."""
    def recording(load):
        def run():
            model = load()
            steps.append(resident())
            return model
        return run
    return [recording(load) for load in loaders]


def plan_naive() -> list[frozenset[str]]:
    """Everything loaded at once (the pipelines' default), then prompts encoded."""
    steps = []
    stage_1 = tiny_deepfloyd.stage_1(["", *PROMPTS])
    stage_2 = tiny_deepfloyd.stage_2()
    steps.append(resident())
    del stage_1, stage_2
    return steps


def plan_free_encoder(cache: Path | None = None) -> list[frozenset[str]]:
    """`load_deepfloyd`'s order: T5 alone, encode, free it, then stage I and II. With `cache` (its
    `embeddings_file`), the first session writes the embeddings and a later one reads them instead of loading T5."""
    steps = []
    loaders = measured(deepfloyd._tiny_loaders(PROMPTS, "cpu"), steps)
    backend = deepfloyd._encode_then_load(PROMPTS, "cpu", True, *loaders, embeddings_file=cache)
    del backend
    return steps


def main():
    sizes = {"T5-XXL encoder": t5_xxl_parameters(), **PUBLISHED}
    print("parameters and fp16 weights:")
    for name, n in sizes.items():
        print(f"  {name:16s} {n / 1e9:5.2f}B  fp16 {2 * n / GIB:5.2f} GiB  fp32 {4 * n / GIB:5.2f} GiB")
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "embeddings.pt"
        plan_free_encoder(cache)  # the session that encodes once and writes the cache
        file_kib = cache.stat().st_size / 1024
        plans = {"all three loaded together": plan_naive(),
                 "T5 freed before stage I loads": plan_free_encoder(),
                 "embeddings cached to a file (no T5)": plan_free_encoder(cache)}
    print(f"\nthe tiny run's embedding cache: {file_kib:.0f} KiB for {len(PROMPTS) + 1} prompts; at T5-XXL's "
          f"[77, 4096] in fp16 each prompt takes {77 * 4096 * 2 / 1024:.0f} KiB")
    print(f"\npeak resident weights per plan (measured co-residence x sizes), T4 {T4_GIB:g} GiB, "
          f"allowance {ALLOWANCE_GIB:g} GiB:")
    for plan, steps in plans.items():
        for bytes_per, dtype in ((2, "fp16"), (4, "fp32")):
            peak = max(sum(sizes[name] for name in step) for step in steps) * bytes_per / GIB
            fits = "fits" if peak + ALLOWANCE_GIB <= T4_GIB else "does not fit"
            together = " | ".join(" + ".join(sorted(step)) or "nothing" for step in steps)
            print(f"  {plan:38s} {dtype}: peak {peak:5.1f} GiB -> {fits:12s} (resident: {together})")


if __name__ == "__main__":
    main()
