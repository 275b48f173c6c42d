"""DeepFloyd IF (stage 1, and stage 2 for upsampling) as a backend of `helpers.diffusion`, through diffusers.

Stage 1's UNet predicts 6 channels for a 3-channel 64 x 64 image: the noise (first 3) and a variance
value v in [-1, 1] (last 3) that `diffusion.add_variance` turns into a learned-range log variance. Its
scheduler (DDPM, 1000 steps, squaredcos_cap_v2, learned_range) gives ``alphas_cumprod``.

Memory (a Colab T4 has 15 GB): the T5-XXL text encoder and the stage-1 UNet do not fit together, so
`load_deepfloyd` encodes every prompt the notebook needs first, keeps the embeddings ([77, 4096] each)
in a cache, frees the encoder, and only then loads the UNet. A prompt not encoded then cannot be
encoded later; the error says which one to add. With an `embeddings_file`, the embeddings are also kept
on disk: a later session that needs no other prompt reads them back and never loads T5 at all.

Nothing here downloads anything unless `load_deepfloyd` is called; it raises `DeepFloydUnavailable`
with one sentence when IF cannot be used here (no CUDA GPU, transformers missing, weights gated or
unreachable), and the notebook falls back to the project backend. ``source="tiny-deepfloyd"`` loads,
through the same steps, the tiny random IF of `helpers.backends.tiny_deepfloyd` instead (offline, CPU, seconds):
the test of this path.
"""
import gc
from pathlib import Path

import torch

from helpers.foundation import checkpoint_files

STAGE_1 = "DeepFloyd/IF-I-XL-v1.0"
STAGE_2 = "DeepFloyd/IF-II-L-v1.0"


class DeepFloydUnavailable(RuntimeError):
    """DeepFloyd IF cannot be loaded on this machine; the message says why in one sentence."""


class EmbeddingsFileError(ValueError):
    """The `embeddings_file` given to `load_deepfloyd` is not a file of prompt embeddings it wrote."""


class DeepFloydBackend:
    """Noise predictor ``eps(x_t, t, embedding) -> (eps, v)`` around IF's stage-1 pipeline (its UNet and scheduler)."""

    def __init__(self, stage_1, embeddings: dict[str, torch.Tensor], upsampler=None):
        self.stage_1, self.upsampler = stage_1, upsampler
        self.unet, self.scheduler = stage_1.unet.eval(), stage_1.scheduler
        self.alphas_cumprod = self.scheduler.alphas_cumprod
        self.embeddings = embeddings
        self.device = self.unet.device
        self.name = "DeepFloyd IF"
        config = self.unet.config
        self.image_shape = (config.in_channels, config.sample_size, config.sample_size)
        if config.out_channels != 2 * config.in_channels:
            raise ValueError(f"an IF-shaped UNet predicts noise and variance: {2 * config.in_channels} "
                             f"output channels for {config.in_channels} input channels, not {config.out_channels}")

    def embed(self, prompt: str) -> torch.Tensor:
        """The cached T5 embedding [1, 77, D] of `prompt` (encoded by `load_deepfloyd`)."""
        if prompt not in self.embeddings:
            raise KeyError(f"prompt {prompt!r} was not encoded: the text encoder is freed after loading, so add it "
                           "to the prompts passed to load_deepfloyd and load again")
        return self.embeddings[prompt]

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: int, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The UNet's noise estimate and variance value, split from its 2C output channels."""
        channels = self.image_shape[0]
        if x_t.dim() != 4 or x_t.shape[1] != channels:
            raise ValueError(f"{self.name} works on [B, {channels}, H, W] images in [-1, 1], got {list(x_t.shape)}")
        states = embedding.to(self.device, self.unet.dtype).expand(x_t.shape[0], -1, -1)
        out = self.unet(x_t.to(self.unet.dtype), t, encoder_hidden_states=states).sample.to(x_t.dtype)
        return out[:, :channels], out[:, channels:]

    @torch.no_grad()
    def upsample(self, images: torch.Tensor, prompt: str, steps: int = 20, seed: int = 0) -> torch.Tensor:
        """Stage 2: 64 x 64 -> 256 x 256 for `prompt`, in [-1, 1]."""
        if self.upsampler is None:
            raise RuntimeError("no stage-2 upsampler was loaded (load_deepfloyd(..., upsample=True))")
        out = self.upsampler(image=images.to(self.device, self.unet.dtype), **self._prompt_kwargs(prompt, len(images)),
                             num_inference_steps=steps, output_type="pt", generator=self._generator(seed)).images
        return out.float().cpu().clamp(-1, 1)  # output_type "pt" is the model's own [-1, 1] range

    @torch.no_grad()
    def generate(self, prompt: str, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The course's Part 0: stage 1 draws a 64 x 64 image of `prompt` in `steps` steps (IF's own sampler,
        CFG 7), then stage 2 upsamples it to 256 x 256 in `steps` steps; both in [-1, 1], on the CPU."""
        small = self.stage_1(**self._prompt_kwargs(prompt, 1), num_inference_steps=steps, output_type="pt",
                             generator=self._generator(seed)).images
        return small.float().cpu().clamp(-1, 1), self.upsample(small, prompt, steps, seed)

    def _prompt_kwargs(self, prompt: str, n: int) -> dict:
        return dict(prompt_embeds=self.embed(prompt).expand(n, -1, -1),
                    negative_prompt_embeds=self.embed("").expand(n, -1, -1))

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)


SOURCES = ("deepfloyd", "tiny-deepfloyd")


def load_deepfloyd(prompts: list[str], device="cuda", upsample: bool = True, source: str = "deepfloyd",
                   embeddings_file=None) -> DeepFloydBackend:
    """Encode `prompts` (and the empty prompt) with T5, free it, then load stage 1 (and stage 2) in fp16.

    `source` is ``"deepfloyd"`` (IF-I-XL and IF-II-L from the Hugging Face Hub) or ``"tiny-deepfloyd"``
    (the tiny random stand-in, built offline). With `embeddings_file`, prompts already stored there are
    read instead of encoded (T5 is not loaded when all are), and the file is rewritten with the new ones."""
    if source == "tiny-deepfloyd":
        return _encode_then_load(prompts, device, upsample, *_tiny_loaders(prompts, device),
                                 embeddings_file=embeddings_file)
    if source != "deepfloyd":
        raise ValueError(f"source={source!r} is not a DeepFloyd IF source; use one of {', '.join(SOURCES)}")
    if not torch.cuda.is_available():
        raise DeepFloydUnavailable("DeepFloyd IF needs a CUDA GPU with about 15 GB (a Colab T4 will do), "
                                   "and there is none here.")
    try:
        loaders = _hub_loaders(device)
    except ImportError as error:
        raise DeepFloydUnavailable(f"DeepFloyd IF needs diffusers, transformers and sentencepiece ({error.name} is "
                                   "missing): pip install diffusers transformers sentencepiece accelerate.") from None
    try:
        return _encode_then_load(prompts, device, upsample, *loaders, embeddings_file=embeddings_file)
    except EmbeddingsFileError:
        raise  # the user's file, not the weights: its own sentence
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        raise DeepFloydUnavailable(
            f"DeepFloyd IF's weights could not be loaded ({reason}); they need a Hugging Face token "
            f"(huggingface-cli login) and the licence accepted at https://huggingface.co/{STAGE_1}.") from None


def read_embeddings(path) -> dict[str, torch.Tensor]:
    """The prompt embeddings stored in `path` by `load_deepfloyd` (prompt -> [1, 77, D]); {} if it does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated file, a pickle weights_only refuses, not a torch file: the same sentence
        stored = None
    if not (isinstance(stored, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in stored.items())):
        raise EmbeddingsFileError(f"{path} is not a file of prompt embeddings written by load_deepfloyd: pass "
                                  "another embeddings_file, or delete this one to encode the prompts again.")
    return stored


def _encode_then_load(prompts, device, upsample, load_encoder, load_stage_1, load_stage_2,
                      embeddings_file=None) -> DeepFloydBackend:
    """The memory order of a 15 GB T4: only the text encoder is loaded while prompts are encoded; it is freed
    (its last reference dropped, CUDA's cache emptied) before the stage-1 UNet is loaded. Prompts already in
    `embeddings_file` are not encoded; when none is missing, T5 is never loaded."""
    wanted = list(dict.fromkeys(["", *prompts]))
    stored = read_embeddings(embeddings_file) if embeddings_file is not None else {}
    missing = [prompt for prompt in wanted if prompt not in stored]
    if missing:
        encoder_pipe = load_encoder()
        for prompt in missing:
            embedding, _ = encoder_pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=device)
            stored[prompt] = embedding.detach().cpu()
        del encoder_pipe  # the last reference: T5's ~9 GB can now be released before the UNet loads
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if embeddings_file is not None:
            checkpoint_files.save_atomic(stored, embeddings_file)
    embeddings = {prompt: stored[prompt].to(device) for prompt in wanted}
    stage_1 = load_stage_1()
    stage_2 = load_stage_2() if upsample else None
    for pipe in (stage_1, stage_2):
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
    return DeepFloydBackend(stage_1, embeddings, stage_2)


def _hub_loaders(device):
    """IF-I-XL's text encoder (alone), IF-I-XL's UNet and IF-II-L's UNet from the Hub, fp16, on `device`."""
    from diffusers import DiffusionPipeline
    from transformers import T5EncoderModel

    fp16 = dict(variant="fp16", torch_dtype=torch.float16)

    def load_encoder():
        encoder = T5EncoderModel.from_pretrained(STAGE_1, subfolder="text_encoder", **fp16).to(device)
        return DiffusionPipeline.from_pretrained(STAGE_1, text_encoder=encoder, unet=None, **fp16)

    return (load_encoder,
            lambda: DiffusionPipeline.from_pretrained(STAGE_1, text_encoder=None, **fp16).to(device),
            lambda: DiffusionPipeline.from_pretrained(STAGE_2, text_encoder=None, **fp16).to(device))


def _tiny_loaders(prompts, device):
    """The same three steps on `helpers.backends.tiny_deepfloyd`'s random IF: fp16 on CUDA as the real weights, fp32 on
    the CPU (where diffusers warns that fp16 pipelines fail and fp16 convolutions are ~10x slower)."""
    from helpers.backends import tiny_deepfloyd as tiny

    vocabulary, dtype = ["", *prompts], torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return (lambda: tiny.stage_1(vocabulary, dtype, with_unet=False).to(device),
            lambda: tiny.stage_1(vocabulary, dtype, with_text_encoder=False).to(device),
            lambda: tiny.stage_2(dtype).to(device))
