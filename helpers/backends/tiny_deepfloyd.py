"""A tiny, randomly initialised DeepFloyd IF, built offline in a second, for testing the real path.

The classes and config keys are IF's own (diffusers' `IFPipeline` and `IFSuperResolutionPipeline`,
`UNet2DConditionModel`, `DDPMScheduler`; transformers' `T5EncoderModel` and `T5Tokenizer`); only the
widths and depths are tiny. The interfaces keep IF's shapes:

- text: 77 tokens -> T5 embeddings [1, 77, D] with D = `TEXT_DIM` standing in for T5-XXL's 4096;
- stage I: a 3 x 64 x 64 image -> 6 channels (noise and the learned-range variance value);
- stage II: the 3 x 64 x 64 image, upsampled and concatenated with a 3 x 256 x 256 noisy image
  (6 channels in), -> 6 channels at 256 x 256, with the noise level of the conditioning image as its
  class label.

The weights are random, so the pictures are noise; every call, shape and dtype is the real one. The
tokenizer's vocabulary is the words of the prompts it is given plus single letters, so any prompt
tokenizes. Construction is seeded: the same arguments give the same weights.
"""
import torch
from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

TEXT_DIM = 16  # stands in for T5-XXL's d_model = 4096
MAX_TOKENS = 77  # IF's tokenizer pads and truncates to 77
IF_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                    thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0,
                    prediction_type="epsilon")
NO_SAFETY = dict(safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)


def tokenizer(prompts: list[str]) -> T5Tokenizer:
    """A T5 (unigram) tokenizer whose pieces are the prompts' words and the letters a-z and digits."""
    words = {"\u2581" + w for p in prompts for w in p.lower().split()}
    letters = set("abcdefghijklmnopqrstuvwxyz0123456789.,'\"") | {"\u2581"}
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -1.0) for piece in sorted(words)] + [(piece, -5.0) for piece in sorted(letters)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_TOKENS)


def text_encoder(vocab_size: int) -> T5EncoderModel:
    """A one-layer T5 v1.1 encoder (gated GELU, relative attention) of width `TEXT_DIM`."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, dropout_rate=0.0)
    return T5EncoderModel(config).eval()


def _unet(levels: int, **shape) -> UNet2DConditionModel:
    """IF's UNet layout (ResNet blocks, simple cross-attention on the text at the coarsest level only,
    attention-pooled text added to the time embedding, scale-shift norm), 4 channels wide per level."""
    return UNet2DConditionModel(
        layers_per_block=1, block_out_channels=(4,) * (levels - 1) + (8,), norm_num_groups=4,
        down_block_types=("ResnetDownsampleBlock2D",) * (levels - 1) + ("SimpleCrossAttnDownBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * (levels - 1),
        cross_attention_dim=32, encoder_hid_dim=TEXT_DIM, attention_head_dim=8, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu", out_channels=6, **shape).eval()


def stage_1(prompts: list[str], dtype=torch.float32, with_text_encoder: bool = True,
            with_unet: bool = True) -> IFPipeline:
    """Stage I: text -> 3 x 64 x 64. Leave out the text encoder or the UNet as `from_pretrained(...=None)` does."""
    tok = tokenizer(prompts)
    encoder = text_encoder(len(tok)).to(dtype) if with_text_encoder else None
    torch.manual_seed(1)
    unet = _unet(2, sample_size=64, in_channels=3).to(dtype) if with_unet else None
    return IFPipeline(tokenizer=tok, text_encoder=encoder, unet=unet, scheduler=DDPMScheduler(**IF_SCHEDULER),
                      **NO_SAFETY)


def stage_2(dtype=torch.float32) -> IFSuperResolutionPipeline:
    """Stage II without a text encoder (it reuses stage I's embeddings): 3 x 64 x 64 -> 3 x 256 x 256."""
    torch.manual_seed(2)
    unet = _unet(5, sample_size=256, in_channels=6, class_embed_type="timestep").to(dtype)
    noising = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    return IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=unet,
                                     scheduler=DDPMScheduler(**IF_SCHEDULER), image_noising_scheduler=noising,
                                     **NO_SAFETY)
