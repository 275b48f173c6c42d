"""DeepFloyd IF (stage 1, and stage 2 for upsampling) as a backend of `helpers.diffusion`, through diffusers.

Stage 1's UNet predicts 6 channels for a 3-channel 64 x 64 image: the noise (first 3) and a variance
value v in [-1, 1] (last 3) that `diffusion.add_variance` turns into a learned-range log variance. Its
scheduler (DDPM, 1000 steps, squaredcos_cap_v2, learned_range) gives ``alphas_cumprod``.

Memory (a Colab T4 has 15 GB): the T5-XXL text encoder and the stage-1 UNet do not fit together, so
`load_deepfloyd` encodes every prompt the notebook needs first, keeps the embeddings ([77, 4096] each)
in a cache, frees the encoder, and only then loads the UNet. A prompt not encoded then cannot be
encoded later; the error says which one to add.

Nothing here downloads anything unless `load_deepfloyd` is called; it raises `DeepFloydUnavailable`
with one sentence when IF cannot be used here (no CUDA GPU, transformers missing, weights gated or
unreachable), and the notebook falls back to the project backend.
"""
import gc

import torch

STAGE_1 = "DeepFloyd/IF-I-XL-v1.0"
STAGE_2 = "DeepFloyd/IF-II-L-v1.0"


class DeepFloydUnavailable(RuntimeError):
    """DeepFloyd IF cannot be loaded on this machine; the message says why in one sentence."""


class DeepFloydBackend:
    """Noise predictor ``eps(x_t, t, embedding) -> (eps, v)`` around an IF-shaped ``UNet2DConditionModel``."""

    def __init__(self, unet, scheduler, embeddings: dict[str, torch.Tensor], upsampler=None):
        self.unet, self.scheduler, self.upsampler = unet.eval(), scheduler, upsampler
        self.alphas_cumprod = scheduler.alphas_cumprod
        self.embeddings = embeddings
        self.device = unet.device
        self.name = "DeepFloyd IF"
        self.image_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        if unet.config.out_channels != 2 * unet.config.in_channels:
            raise ValueError(f"an IF-shaped UNet predicts noise and variance: {2 * unet.config.in_channels} "
                             f"output channels for {unet.config.in_channels} input channels, "
                             f"not {unet.config.out_channels}")

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
        embedding = self.embed(prompt).expand(len(images), -1, -1)
        null = self.embed("").expand(len(images), -1, -1)
        out = self.upsampler(image=images.to(self.device, self.unet.dtype), prompt_embeds=embedding,
                             negative_prompt_embeds=null, num_inference_steps=steps, output_type="pt",
                             generator=torch.Generator(self.device).manual_seed(seed)).images
        return out.float().cpu().clamp(-1, 1)  # output_type "pt" is the model's own [-1, 1] range


def load_deepfloyd(prompts: list[str], device="cuda", upsample: bool = True) -> DeepFloydBackend:
    """Encode `prompts` (and the empty prompt) with T5, free it, then load stage 1 (and stage 2) in fp16."""
    if not torch.cuda.is_available():
        raise DeepFloydUnavailable("DeepFloyd IF needs a CUDA GPU with about 15 GB (a Colab T4 will do), "
                                   "and there is none here.")
    try:
        from diffusers import DiffusionPipeline
        from transformers import T5EncoderModel
    except ImportError as error:
        raise DeepFloydUnavailable(f"DeepFloyd IF needs transformers and sentencepiece ({error.name} is missing): "
                                   "pip install transformers sentencepiece accelerate.") from None
    fp16 = dict(variant="fp16", torch_dtype=torch.float16)
    try:
        encoder = T5EncoderModel.from_pretrained(STAGE_1, subfolder="text_encoder", **fp16).to(device)
        encoder_pipe = DiffusionPipeline.from_pretrained(STAGE_1, text_encoder=encoder, unet=None, **fp16)
        embeddings = {}
        for prompt in dict.fromkeys(["", *prompts]):
            embedding, _ = encoder_pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=device)
            embeddings[prompt] = embedding.detach()
        del encoder, encoder_pipe  # the last references: T5's ~9 GB can now be released before the UNet loads
        gc.collect()
        torch.cuda.empty_cache()
        stage_1 = DiffusionPipeline.from_pretrained(STAGE_1, text_encoder=None, **fp16).to(device)
        stage_2 = (DiffusionPipeline.from_pretrained(STAGE_2, text_encoder=None, **fp16).to(device)
                   if upsample else None)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        raise DeepFloydUnavailable(
            f"DeepFloyd IF's weights could not be loaded ({reason}); they need a Hugging Face token "
            f"(huggingface-cli login) and the licence accepted at https://huggingface.co/{STAGE_1}.") from None
    return DeepFloydBackend(stage_1.unet, stage_1.scheduler, embeddings, stage_2)
