"""Checks of the DDPM sampling tricks (exercises 4.1-4.8) against diffusers' DDPMScheduler (add_noise, step)
and against the invariants of each trick, with small estimates whose answers are known."""
import torch
import torchvision.transforms.functional as TF

from helpers.checks.core import close, fail, generator, grades

STRIDED = list(range(990, -1, -30))


def scheduler(timesteps=STRIDED):
    """diffusers' DDPM scheduler (linear betas, fixed_small variance, no clipping) on `timesteps`."""
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        fail("this check compares with diffusers' DDPMScheduler: pip install diffusers")
    ddpm = DDPMScheduler(clip_sample=False)
    ddpm.set_timesteps(timesteps=timesteps)
    return ddpm


def oracle(c: torch.Tensor, ac):
    """The exact noise estimate when every image is `c`: eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""
    return lambda x, t: ((x - ac[t].sqrt() * c) / (1 - ac[t]).sqrt(), None)


@grades("4.1")
def forward_process(forward):
    """forward(x0, t, alphas_cumprod, noise=None, generator=None) = diffusers' add_noise(x0, noise, t)."""
    ac = scheduler().alphas_cumprod
    x0, noise, t = torch.linspace(-1, 1, 128).view(2, 1, 8, 8), torch.randn(2, 1, 8, 8), 500
    want = scheduler().add_noise(x0, noise, torch.tensor([t]))
    got = forward(x0, t, ac, noise=noise)
    if not close(got, want, 1e-4):
        a = ac[t]
        if close(got, a * x0 + (1 - a) * noise, 1e-4):
            fail("scale x0 and the noise by the square roots sqrt(abar_t) and sqrt(1 - abar_t)")
        if close(got, scheduler().add_noise(x0, noise, torch.tensor([t - 1])), 1e-4):
            fail("off by one timestep: use abar at t itself, alphas_cumprod[t]")
        if close(got, a.sqrt() * x0, 1e-4):
            fail("the noise term sqrt(1 - abar_t) eps is missing")
        fail("x_t differs from sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (diffusers' DDPMScheduler.add_noise)")
    drawn = forward(x0.repeat(32, 1, 1, 1), t, ac, generator=generator(1))
    if not torch.equal(drawn, forward(x0.repeat(32, 1, 1, 1), t, ac, generator=generator(1))):
        fail("without `noise`, draw eps from the `generator` argument")
    eps = (drawn - ac[t].sqrt() * x0.repeat(32, 1, 1, 1)) / (1 - ac[t]).sqrt()
    if abs(eps.mean()) > 0.1 or abs(eps.std() - 1) > 0.1:
        fail("without `noise`, eps must be standard normal")


@grades("4.2")
def one_step_estimate(estimate_x0):
    """estimate_x0(x_t, t, eps, alphas_cumprod) inverts the forward process when eps is the true noise."""
    ddpm = scheduler()
    x0, eps = torch.linspace(-1, 1, 128).view(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    for t in (30, 500, 990):
        x_t = ddpm.add_noise(x0, eps, torch.tensor([t]))
        got = estimate_x0(x_t, t, eps, ddpm.alphas_cumprod)
        if not close(got, x0, 1e-3):
            if close(got, (x_t + (1 - ddpm.alphas_cumprod[t]).sqrt() * eps) / ddpm.alphas_cumprod[t].sqrt(), 1e-3):
                fail("the noise term must be subtracted from x_t, not added")
            fail(f"at t = {t} the estimate does not recover x0 from x_t and its true noise: invert "
                 f"x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps")


@grades("4.3")
def ddpm_step(ddpm_step):
    """ddpm_step(x_t, t, t_prev, eps, alphas_cumprod, predicted=None, generator=None) against diffusers'
    DDPMScheduler.step on the strided schedule: same mean and spread over 4,000 draws."""
    ddpm, n, t, t_prev = scheduler(), 4000, 90, 60
    x_t, eps = torch.full((n, 1, 1, 1), 0.3), torch.full((n, 1, 1, 1), -0.2)
    got = ddpm_step(x_t, t, t_prev, eps, ddpm.alphas_cumprod, None, generator(2))
    want = ddpm.step(eps, t, x_t, generator=generator(3)).prev_sample
    tol = 5 * want.std().item() / n ** 0.5
    if got.std() < 0.1 * want.std():
        fail("the step adds no noise: a DDPM step samples the posterior, mean + exp(log var / 2) z")
    if abs(got.mean() - want.mean()) > tol:
        one = scheduler([t, t - 1])
        if abs(got.mean() - one.step(eps, t, x_t, generator=generator(3)).prev_sample.mean()) < tol:
            fail("the step went to t - 1: step to the previous strided timestep t_prev")
        fail("the posterior mean differs from diffusers' DDPMScheduler.step: alpha = abar_t / abar_t', "
             "beta = 1 - alpha, and the mean weighs x0_hat and x_t as in q(x_t' | x_t, x0_hat)")
    if abs(got.std() / want.std() - 1) > 0.1:
        fail(f"the noise's standard deviation is {got.std():.4f}, diffusers' {want.std():.4f}: use the posterior "
             f"variance beta_tilde = (1 - abar_t') / (1 - abar_t) beta")


def _recording(c, ac, calls):
    exact = oracle(c, ac)

    def estimate(x, t):
        calls.append((t, x.clone()))
        return exact(x, t)
    return estimate


@grades("4.4")
def iterative_denoise(iterative_denoise):
    """DDPM steps from timesteps[i_start] to timesteps[-1]: the estimate is asked at each visited timestep but
    the last, `after_step` edits each result, and the exact estimate of a one-point data set lands on it."""
    ac, c, calls, edits = scheduler().alphas_cumprod, torch.full((1, 1, 4, 4), 0.5), [], []
    x = ac[STRIDED[10]].sqrt() * c + (1 - ac[STRIDED[10]]).sqrt() * torch.randn(1, 1, 4, 4)

    def after(y, t):
        edits.append(t)
        return y
    out, trajectory = iterative_denoise(_recording(c, ac, calls), x, 10, STRIDED, ac, generator(4), after, True)
    asked = [t for t, _ in calls]
    if asked != STRIDED[10:-1]:
        fail(f"the estimate was asked at {asked[:3]}...{asked[-2:]}, not at timesteps[i_start:-1] = "
             f"{STRIDED[10:13]}...{STRIDED[-3:-1]}: start at timesteps[i_start] and stop after stepping to "
             f"timesteps[-1]")
    if edits != STRIDED[11:]:
        fail("after_step must be called after every step, with the timestep just reached")
    if len(trajectory) != len(STRIDED) - 10:
        fail(f"the trajectory has {len(trajectory)} entries, not one per visited timestep "
             f"({len(STRIDED) - 10}, the start included)")
    if not close(out, c, 0.05):
        fail("denoising with the exact noise estimate of a one-point data set does not end on that point")


@grades("4.5")
def sdedit(sdedit):
    """SDEdit starts at timesteps[i_start] from the image noised by the forward process."""
    ac, c, calls = scheduler().alphas_cumprod, torch.full((1, 1, 64, 64), 0.8), []
    out = sdedit(_recording(c, ac, calls), c, 5, STRIDED, ac, generator(5))
    t, x = calls[0]
    if t != STRIDED[5]:
        fail(f"the first step must be at timesteps[i_start] = {STRIDED[5]}, not {t}")
    if x.std() < 0.5 * (1 - ac[t]).sqrt():
        fail("the image must be noised with the forward process before denoising, not used as it is")
    if abs(x.mean() - ac[t].sqrt() * 0.8) > 0.1:
        fail("the start is not the image noised to timesteps[i_start]: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps")
    if not close(out, c, 0.05):
        fail("SDEdit of an image with its own exact noise estimate must return the image")


@grades("4.6")
def inpaint(inpaint):
    """Where mask = 0, every step is reset to the original noised to that step's timestep; where mask = 1 the
    model paints."""
    ac, calls = scheduler().alphas_cumprod, []
    image, painted = torch.full((1, 1, 32, 32), -0.6), torch.full((1, 1, 32, 32), 0.7)
    mask = torch.zeros(32, 32)
    mask[:, 16:] = 1
    out = inpaint(_recording(painted, ac, calls), image, mask, STRIDED, ac, generator(6))
    if not close(out[..., :16], image[..., :16], 0.05):
        fail("pixels where mask = 0 must end as the original image (mask = 1 marks what the model paints)")
    if not close(out[..., 16:], painted[..., 16:], 0.05):
        fail("pixels where mask = 1 must be left to the model")
    t, x = calls[0]
    known = x[..., :16]
    if known.std() < 0.5 * (1 - ac[t]).sqrt():
        fail("the kept pixels must be the original noised to the current timestep (forward process), not pasted clean")
    if abs(known.mean() - ac[t].sqrt() * -0.6) > 0.1:
        fail("the kept pixels must be the original forward-noised to the current timestep")


def _views():
    from helpers.diffusion import FLIP, IDENTITY
    return IDENTITY, FLIP


@grades("4.7")
def anagram(anagram):
    """eps = mean_k inverse_k(eps_k(apply_k(x))) for two prompts, one seen upright and one flipped."""
    identity, flip = _views()
    first = lambda x, t: (x * 2.0, None)                                  # noqa: E731
    second = lambda x, t: (x.cumsum(-1), None)                            # noqa: E731 (not flip-symmetric)
    x = torch.randn(1, 1, 6, 6)
    eps, variance = anagram([first, second], [identity, flip])(x, 500)
    want = (x * 2.0 + torch.flip(torch.flip(x, dims=(-2, -1)).cumsum(-1), dims=(-2, -1))) / 2
    if not close(eps, want):
        if close(eps, (x * 2.0 + torch.flip(x, dims=(-2, -1)).cumsum(-1)) / 2):
            fail("each view's estimate must be mapped back by the view's inverse before averaging")
        if close(eps, 2 * want):
            fail("average the views' estimates (mean), do not add them")
        fail("the estimate is not the mean of each view's estimate, seen through and mapped back by its view")
    if variance is not None:
        fail("with no predicted variance (None), the anagram's variance must be None too")


@grades("4.8")
def hybrid(hybrid):
    """eps = low_pass(eps_low) + eps_high - low_pass(eps_high), low_pass a Gaussian blur (kernel 33 default)."""
    x = torch.randn(1, 1, 40, 40)
    low = lambda y, t: (torch.sin(y), None)                               # noqa: E731
    high = lambda y, t: (y ** 2, None)                                    # noqa: E731
    blur = lambda y: TF.gaussian_blur(y, [9, 9], [2.0, 2.0])               # noqa: E731
    eps, _ = hybrid(low, high, 9, 2.0)(x, 500)
    want = blur(torch.sin(x)) + x ** 2 - blur(x ** 2)
    if not close(eps, want, 1e-4):
        if close(eps, blur(x ** 2) + torch.sin(x) - blur(torch.sin(x)), 1e-4):
            fail("low and high are swapped: the low-pass part comes from the first estimate")
        if close(eps, blur(torch.sin(x)) + x ** 2, 1e-4):
            fail("the high-pass part must remove the high estimate's own low frequencies: eps_high - low_pass(eps_high)")
        fail("the hybrid estimate is not low_pass(eps_low) + eps_high - low_pass(eps_high)")
    same, _ = hybrid(high, high, 9, 2.0)(x, 500)
    if not close(same, x ** 2, 1e-4):
        fail("two equal estimates must give that estimate back")
