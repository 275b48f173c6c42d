"""The two backends of the sampling tricks: the project's flow model read as a noise predictor, and
DeepFloyd IF's interface on a tiny random UNet of IF's shape (no download)."""
import gc

import pytest
import torch
from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
from torch import nn
from transformers import T5EncoderModel

from helpers import diffusion
from helpers.backends import deepfloyd, standin, tiny_deepfloyd
from helpers.backends.flow_backend import FlowNoisePredictor, path_time, project_backend

SCHEDULER = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")


class OnePointVelocity(nn.Module):
    """The exact flow-matching velocity when the data is the single image x0: v(z, s) = (z - x0) / s."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = nn.Parameter(x0, requires_grad=False)
        self.config = {"num_classes": 10}

    def forward(self, z, s, labels):
        return (z - self.x0) / s.view(-1, 1, 1, 1)


def test_flow_model_as_noise_predictor_recovers_the_true_noise():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
    backend = FlowNoisePredictor(OnePointVelocity(x0).double())
    assert torch.equal(backend.alphas_cumprod, SCHEDULER.alphas_cumprod.double())
    for t in (990, 500, 30, 0):
        noise = torch.randn(3, 1, 32, 32, generator=gen, dtype=torch.float64)
        x_t = diffusion.forward(x0, t, SCHEDULER.alphas_cumprod.double(), noise)
        eps, variance = backend.eps(x_t, t, backend.embed("a photo of the digit 6"))
        assert variance is None
        torch.testing.assert_close(eps, noise, rtol=1e-9, atol=1e-9)


def test_path_time_maps_the_ddpm_point_onto_the_straight_path():
    abar = SCHEDULER.alphas_cumprod.double()[[0, 300, 990]]
    s, scale = path_time(abar)
    torch.testing.assert_close(abar.sqrt() / scale, 1 - s)  # x0's weight after scaling is 1 - s
    assert s[0] < 0.01 and s[-1] > 0.98


@pytest.mark.parametrize("prompt, label", [("a photo of the digit 6", 6), ("an oil painting of a seven", 7),
                                           ("a 7", 7), ("a sneaker", 17), ("a pair of trousers", 11),
                                           ("a T-shirt", 10), ("a shirt", 16), ("an ankle boot", 19), ("", 20)])
def test_prompts_name_a_digit_or_a_garment(prompt, label):
    assert standin.label_of(prompt) == label


@pytest.mark.parametrize("prompt", ["a 6 and a 9", "a cat", "a shirt under a T-shirt"])
def test_a_prompt_naming_none_or_two_classes_is_refused_with_the_classes_it_names(prompt):
    with pytest.raises(ValueError, match="exactly one digit or one of T-shirt, .* names"):
        standin.label_of(prompt)


def test_digit_prompts_on_a_digits_only_model():
    backend = FlowNoisePredictor(OnePointVelocity(torch.zeros(1, 1, 32, 32)))
    assert backend.embed("a photo of the digit 6").item() == 6
    assert backend.embed("").item() == 10  # the null class of a 10-class model
    with pytest.raises(ValueError, match="knows 10 classes, the digits only"):
        backend.embed("a sneaker")
    with pytest.raises(ValueError, match=r"\[B, 1, 32, 32\]"):
        backend.eps(torch.zeros(1, 3, 64, 64), 500, backend.embed("6"))


def test_stand_in_data_alternates_digits_and_garments():
    images, labels = standin.load_data("test", 7)
    assert images.shape == (7, 1, 32, 32) and (labels[::2] < 10).all() and (labels[1::2] >= 10).all()


@pytest.mark.slow
def test_shipped_project_backend_draws_the_class_it_is_asked_for():
    backend = project_backend("cpu")
    classifier = standin.trained_classifier("cpu")
    gen = torch.Generator().manual_seed(0)
    asked = [2, 6, 9, 11, 17, 18]  # a 2, a 6, a 9, a trouser, a sneaker, a bag
    labels = []
    for k in asked:
        estimate = diffusion.guided(backend, backend.embed(f"a {standin.CLASS_NAMES[k]}"), backend.embed(""), 7.0)
        x = torch.randn(2, 1, 32, 32, generator=gen)
        labels.append(classifier(diffusion.iterative_denoise(estimate, x, 0, diffusion.strided_timesteps(),
                                                             backend.alphas_cumprod, gen).clamp(-1, 1)).argmax(1))
    accuracy = (torch.cat(labels) == torch.tensor(asked).repeat_interleave(2)).float().mean()
    assert accuracy >= 0.9


@pytest.fixture(scope="module")
def tiny_if():
    """A randomly initialised UNet of IF's shape (3 channels in, 6 out, cross-attention on text), IF's scheduler."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=3, out_channels=6, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=12,
                                attention_head_dim=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    gen = torch.Generator().manual_seed(1)
    embeddings = {p: torch.randn(1, 77, 12, generator=gen) for p in ("", "an oil painting of a man", "a waterfall")}
    stage_1 = IFPipeline(tokenizer=None, text_encoder=None, unet=unet, scheduler=SCHEDULER, **tiny_deepfloyd.NO_SAFETY)
    return deepfloyd.DeepFloydBackend(stage_1, embeddings)


@pytest.mark.slow
def test_every_trick_runs_on_an_if_shaped_backend(tiny_if):
    backend, ac = tiny_if, tiny_if.alphas_cumprod
    timesteps = diffusion.strided_timesteps(990, 330)  # 990, 660, 330, 0: short, same code path
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    man, falls, null = (backend.embed(p) for p in ("an oil painting of a man", "a waterfall", ""))
    eps, variance = backend.eps(diffusion.forward(image, 500, ac, generator=gen), 500, man)
    assert eps.shape == variance.shape == (1, 3, 32, 32)

    cfg = diffusion.guided(backend, man, null, 7.0)
    outputs = {
        "sample": diffusion.iterative_denoise(cfg, torch.randn(2, 3, 32, 32, generator=gen), 0, timesteps, ac, gen),
        "sdedit": diffusion.sdedit(cfg, image, 1, timesteps, ac, gen),
        "inpaint": diffusion.inpaint(cfg, image, (torch.arange(32) < 16).float().expand(32, 32), timesteps, ac, gen),
        "anagram": diffusion.iterative_denoise(
            diffusion.anagram([cfg, diffusion.guided(backend, falls, null, 7.0)], [diffusion.IDENTITY, diffusion.FLIP]),
            torch.randn(1, 3, 32, 32, generator=gen), 0, timesteps, ac, gen),
        "hybrid": diffusion.iterative_denoise(
            diffusion.hybrid(cfg, diffusion.guided(backend, falls, null, 7.0)),
            torch.randn(1, 3, 32, 32, generator=gen), 0, timesteps, ac, gen),
    }
    for name, out in outputs.items():
        assert out.shape[1:] == (3, 32, 32) and torch.isfinite(out).all(), name


def test_if_backend_refuses_unencoded_prompts_and_wrong_shapes(tiny_if):
    with pytest.raises(KeyError, match="was not encoded"):
        tiny_if.embed("a photo of a dog")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_if.eps(torch.zeros(1, 1, 32, 32), 500, tiny_if.embed(""))


def test_load_deepfloyd_says_why_it_cannot_run_here():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; whether the weights are reachable depends on the account")
    with pytest.raises(deepfloyd.DeepFloydUnavailable, match="CUDA GPU"):
        deepfloyd.load_deepfloyd(["a photo of a dog"])


@pytest.mark.slow
def test_tiny_deepfloyd_goes_through_the_real_loading_steps_with_if_shapes():
    prompts = ["a rocket ship", "a man wearing a hat"]
    backend = deepfloyd.load_deepfloyd(prompts, "cpu", source="tiny-deepfloyd")
    gc.collect()
    assert not [obj for obj in gc.get_objects() if type(obj) is T5EncoderModel]  # freed before stage 1 loaded
    assert set(backend.embeddings) == {"", *prompts}
    for embedding in backend.embeddings.values():  # fp32 on the CPU, fp16 (as IF's weights) on CUDA
        assert embedding.shape == (1, 77, tiny_deepfloyd.TEXT_DIM) and embedding.dtype == backend.unet.dtype
    assert not torch.equal(backend.embed(prompts[0]), backend.embed(prompts[1]))
    assert backend.image_shape == (3, 64, 64)
    eps, variance = backend.eps(torch.zeros(2, 3, 64, 64), 990, backend.embed(prompts[0]))
    assert eps.shape == variance.shape == (2, 3, 64, 64) and eps.dtype == torch.float32
    small, big = backend.generate(prompts[0], steps=1)
    assert small.shape == (1, 3, 64, 64) and big.shape == (1, 3, 256, 256)
    assert small.dtype == big.dtype == torch.float32 and small.abs().max() <= 1 and big.abs().max() <= 1
    assert backend.upsampler.unet.config.in_channels == 6 and backend.upsampler.unet.config.sample_size == 256
    with pytest.raises(ValueError, match="not a DeepFloyd IF source"):
        deepfloyd.load_deepfloyd(prompts, "cpu", source="tiny")


@pytest.mark.slow
def test_embeddings_file_spares_the_text_encoder_in_a_later_session(tmp_path, monkeypatch):
    file = tmp_path / "embeddings.pt"
    first = deepfloyd.load_deepfloyd(["a rocket ship"], "cpu", upsample=False, source="tiny-deepfloyd",
                                     embeddings_file=file)
    assert set(deepfloyd.read_embeddings(file)) == {"", "a rocket ship"}
    encoders = []
    real_loaders = deepfloyd._tiny_loaders

    def counting(prompts, device):
        load_encoder, load_1, load_2 = real_loaders(prompts, device)
        return (lambda: encoders.append(1) or load_encoder()), load_1, load_2
    monkeypatch.setattr(deepfloyd, "_tiny_loaders", counting)
    again = deepfloyd.load_deepfloyd(["a rocket ship"], "cpu", upsample=False, source="tiny-deepfloyd",
                                     embeddings_file=file)
    assert not encoders  # every prompt was on disk: T5 never loaded
    assert torch.equal(again.embed("a rocket ship"), first.embed("a rocket ship"))
    deepfloyd.load_deepfloyd(["a man wearing a hat"], "cpu", upsample=False, source="tiny-deepfloyd",
                             embeddings_file=file)
    assert encoders == [1] and set(deepfloyd.read_embeddings(file)) == {"", "a rocket ship", "a man wearing a hat"}
    not_embeddings = tmp_path / "notes.pt"
    not_embeddings.write_bytes(b"my notes")
    with pytest.raises(deepfloyd.EmbeddingsFileError, match="not a file of prompt embeddings written by"):
        deepfloyd.load_deepfloyd(["a rocket ship"], "cpu", source="tiny-deepfloyd", embeddings_file=not_embeddings)
    assert not_embeddings.read_bytes() == b"my notes"  # never overwritten


def test_tiny_deepfloyd_tokenizer_pads_to_77_and_spells_unknown_words():
    tokenizer = tiny_deepfloyd.tokenizer(["a rocket ship"])
    ids = tokenizer("a rocket zebra", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and tokenizer.unk_token_id not in ids
    assert tokenizer.tokenize("a rocket") == ["\u2581a", "\u2581rocket"]
