"""Checks of the DDPM sampling tricks (exercises 4.1-4.8) against diffusers' DDPMScheduler (add_noise, step and
its x0 prediction) and against the invariants of each trick, with small estimates whose answers are known.

Operating points: DeepFloyd's strided timesteps (990, 960, ..., 30, 0) from 990 down to 30 and a coarser
schedule (990, 900, ..., 90, 0); images in [-1, 1] and in [0, 1], grey and colour, batches, non-square sizes;
SDEdit's i_start 1, 5, 10 and 20 (the course's list runs 1, 3, 5, 7, 10, 20); inpainting masks [H, W] and
[1, H, W], float and bool; anagrams with 2 and 3 views; hybrids with the course's blur (33, 2) and others.

When a check cannot name the mistake it says where the output differs (operating point, index, values) and
what to compare it with, never the solution's code."""
import torch
import torchvision.transforms.functional as TF

from helpers.checks.core import close, fail, first_line, generator, grades, name_the_mistake, shape_of, where

STRIDED = list(range(990, -1, -30))   # DeepFloyd's strided schedule, as the course builds it
COARSE = list(range(990, -1, -90))    # fewer, larger steps: catches a stride of 30 written into the code
TIMESTEPS = (990, 690, 500, 250, 90, 30)


def scheduler(timesteps=STRIDED, variance_type: str = "fixed_small"):
    """diffusers' DDPM scheduler (linear betas, no clipping) on `timesteps`."""
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        fail("this check compares with diffusers' DDPMScheduler: pip install diffusers")
    ddpm = DDPMScheduler(clip_sample=False, variance_type=variance_type)
    ddpm.set_timesteps(timesteps=timesteps)
    return ddpm


def oracle(c: torch.Tensor, ac):
    """The exact noise estimate when every image is `c`: eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""
    return lambda x, t: ((x - ac[t].sqrt() * c) / (1 - ac[t]).sqrt(), None)


def _images(i: int) -> tuple[str, torch.Tensor]:
    """Operating point i's clean images: grey in [-1, 1] (even i) or colour in [0, 1] (odd i), batches of 2-3."""
    if i % 2 == 0:
        return "3 grey images in [-1, 1]", torch.rand(3, 1, 8, 12, generator=generator(30 + i)) * 2 - 1
    return "2 colour images in [0, 1]", torch.rand(2, 3, 6, 6, generator=generator(30 + i))


def _call(function, what: str, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        fail(f"{what} fails ({first_line(error)})")


# ---- 4.1 ------------------------------------------------------------------------------------------------------
@grades("4.1")
def forward_process(forward):
    """forward(x0, t, alphas_cumprod, noise=None, generator=None) = diffusers' add_noise(x0, noise, t) at
    t = 990 ... 30, both image scales; without noise, eps standard normal from `generator`."""
    ddpm = scheduler()
    ac = ddpm.alphas_cumprod
    for i, t in enumerate(TIMESTEPS):
        at, x0 = _images(i)
        noise, original = torch.randn(x0.shape, generator=generator(40 + i)), x0.clone()
        got = _call(forward, f"forward at t = {t}", x0, t, ac, noise=noise)
        want = ddpm.add_noise(x0, noise, torch.tensor([t]))
        if not torch.equal(x0, original):
            fail("forward changed x0 in place: return a new tensor")
        if close(got, want, 1e-5):
            continue
        if not isinstance(got, torch.Tensor) or got.shape != x0.shape:
            fail(f"forward returned {shape_of(got)} for x0 of shape {list(x0.shape)}")
        a = ac[t].double()
        named = (
            (ddpm.add_noise(x0, noise, torch.tensor([t - 1])), "it uses alpha_bar of t - 1 instead of t"),
            (ddpm.add_noise(x0, noise, torch.tensor([t + 1])), "it uses alpha_bar of t + 1 instead of t"),
            (a * x0 + (1 - a) * noise, "it scales x0 and the noise by abar_t and 1 - abar_t themselves: each weight "
                                       "needs its square root"),
            (a.sqrt() * x0 + (1 - a) * noise, "the noise's weight is missing its square root"),
            (a * x0 + (1 - a).sqrt() * noise, "x0's weight is missing its square root"),
            ((1 - a).sqrt() * x0 + a.sqrt() * noise, "it swaps the weights of x0 and of the noise"),
            (a.sqrt() * x0, "the noise term is missing"),
            (x0 + (1 - a).sqrt() * noise, "x0 is not scaled down: the forward process shrinks the image as it adds "
                                          "noise"),
        )
        name_the_mistake(got, named, f"at t = {t}", 1e-5)
        implied = (got.double() - a.sqrt() * x0) / (1 - a).sqrt()
        if abs(float(implied.std()) - 1) < 0.3 and not close(implied, noise, 1e-2):
            fail(f"at t = {t}, forward ignores the noise it is given: with `noise`, x_t uses that noise")
        fail(f"at t = {t} ({at}), x_t differs from diffusers' DDPMScheduler.add_noise(x0, noise, t), {where(got, want)}")
    _drawn_noise(forward, ac)


def _drawn_noise(forward, ac) -> None:
    x0 = torch.rand(64, 1, 8, 8, generator=generator(46)) * 2 - 1
    for t in (500, 30):
        drawn = _call(forward, f"forward at t = {t} without noise", x0, t, ac, generator=generator(1))
        if not torch.equal(drawn, forward(x0, t, ac, generator=generator(1))):
            fail("without `noise`, draw eps from the `generator` argument: the same seed must give the same x_t")
        if torch.equal(drawn, forward(x0, t, ac, generator=generator(2))):
            fail("without `noise`, two generators with different seeds gave the same x_t: draw eps from `generator`")
        eps = (drawn.double() - ac[t].double().sqrt() * x0) / (1 - ac[t].double()).sqrt()
        if abs(float(eps.mean())) > 0.1 or abs(float(eps.std()) - 1) > 0.1:
            fail(f"without `noise`, the eps inside x_t at t = {t} has mean {float(eps.mean()):.2f} and standard "
                 f"deviation {float(eps.std()):.2f}: draw it standard normal")


# ---- 4.2 ------------------------------------------------------------------------------------------------------
@grades("4.2")
def one_step_estimate(estimate_x0):
    """estimate_x0(x_t, t, eps, alphas_cumprod) = diffusers' x0 prediction (DDPMScheduler.step's
    pred_original_sample) at t = 990 ... 30, for any x_t and eps (not only the true noise)."""
    ac = scheduler().alphas_cumprod
    for i, t in enumerate(TIMESTEPS):
        ddpm = scheduler([t, 0])
        at, x0 = _images(i)
        eps = torch.randn(x0.shape, generator=generator(50 + i))
        x_t = ddpm.add_noise(x0, eps, torch.tensor([t]))
        estimate = eps + 0.3 * torch.randn(x0.shape, generator=generator(60 + i))   # a model's imperfect estimate
        for noise, label in ((eps, "the true noise"), (estimate, "an estimate of the noise")):
            got = _call(estimate_x0, f"estimate_x0 at t = {t}", x_t, t, noise, ac)
            want = ddpm.step(noise, t, x_t).pred_original_sample
            if close(got, want, 1e-4):
                continue
            if not isinstance(got, torch.Tensor) or got.shape != x_t.shape:
                fail(f"estimate_x0 returned {shape_of(got)} for x_t of shape {list(x_t.shape)}")
            a = ac[t].double()
            named = (
                ((x_t + (1 - a).sqrt() * noise) / a.sqrt(), "it adds the noise term to x_t: subtract it"),
                ((x_t - (1 - a).sqrt() * noise) / a, "it divides by abar_t instead of its square root"),
                ((x_t - (1 - a) * noise) / a.sqrt(), "the noise's weight is missing its square root"),
                ((x_t - (1 - a).sqrt() * noise) * a.sqrt(), "it multiplies by sqrt(abar_t) instead of dividing"),
                (x_t - (1 - a).sqrt() * noise, "it removes the noise but does not divide by sqrt(abar_t)"),
                (x_t / a.sqrt(), "it rescales x_t without removing the noise"),
                ((x_t - a.sqrt() * noise) / (1 - a).sqrt(), "it swaps abar_t and 1 - abar_t"),
                ((x_t - (1 - ac[t - 1].double()).sqrt() * noise) / ac[t - 1].double().sqrt(),
                 "it uses alpha_bar of t - 1 instead of t"),
            )
            name_the_mistake(got, named, f"at t = {t}", 1e-4)
            fail(f"at t = {t} ({at}, with {label}), x0_hat differs from diffusers' DDPMScheduler.step(eps, t, x_t)"
                 f".pred_original_sample, {where(got, want)}")


# ---- 4.3 ------------------------------------------------------------------------------------------------------
STEP_PAIRS = ((990, 960, None), (690, 660, None), (390, 360, None), (90, 60, None), (30, 0, None),
              (90, 60, 0.6), (30, 0, -0.4))   # (t, t', predicted variance v in [-1, 1] or None)


def _reference_step(t, t_prev, predicted):
    """x_t, eps, seed -> diffusers' step on the strided schedule (learned range when a variance is predicted)."""
    ddpm = scheduler(STRIDED, "fixed_small" if predicted is None else "learned_range")

    def step(x, eps, seed):
        output = eps if predicted is None else torch.cat([eps, torch.full_like(eps, predicted)], 1)
        return ddpm.step(output, t, x, generator=generator(seed)).prev_sample
    assert t_prev == ddpm.previous_timestep(t)
    return step


def _means(ac, t, t_prev):
    """Wrong posterior means, as functions of (x_t, eps), with the sentence that names each."""
    a_t, a_p = ac[t].double(), ac[t_prev].double()
    a_one = a_t / ac[t - 1].double()

    def mean(alpha, x0_weight_root=True, x_t_root=True, x0=lambda x, e: (x - (1 - a_t).sqrt() * e) / a_t.sqrt(),
             swap=False):
        beta = 1 - alpha
        p = (a_p.sqrt() if x0_weight_root else a_p) * beta / (1 - a_t)
        q = (alpha.sqrt() if x_t_root else alpha) * (1 - a_p) / (1 - a_t)
        if swap:
            p, q = q, p
        return lambda x, e: p * x0(x, e) + q * x
    return (
        (mean(a_one), "the step uses the one-step alpha_t = abar_t / abar_(t-1), but a strided step from t to t' has "
                      "alpha = abar_t / abar_t'"),
        (mean(a_t / a_p, swap=True), "the posterior mean swaps the weights of x0_hat and of x_t"),
        (mean(a_t / a_p, x0=lambda x, e: e), "the posterior mean takes the noise estimate in place of x0_hat"),
        (mean(a_t / a_p, x_t_root=False), "the weight of x_t is missing the square root of alpha"),
        (mean(a_t / a_p, x0_weight_root=False), "the weight of x0_hat is missing the square root of abar_t'"),
        (mean(a_t / a_p, x0=lambda x, e: ((x - (1 - a_t).sqrt() * e) / a_t.sqrt()).clamp(-1, 1)),
         "the step clips x0_hat to [-1, 1]: the course's step does not clip"),
    )


@grades("4.3")
def ddpm_step(ddpm_step):
    """ddpm_step(x_t, t, t_prev, eps, alphas_cumprod, predicted=None, generator=None) against diffusers'
    DDPMScheduler.step on the strided schedule, from t = 990 to 30: the same posterior mean (exactly, the noise
    cancelling between two calls with one seed) and the same spread, with and without a predicted variance."""
    ac = scheduler().alphas_cumprod
    for i, (t, t_prev, v) in enumerate(STEP_PAIRS):
        what = f"at t = {t} -> {t_prev}" + ("" if v is None else f" with a predicted variance v = {v:g}")
        shape = (4, 3, 16, 24)
        x1, e1, x2, e2 = (torch.randn(shape, generator=generator(70 + 4 * i + k)) for k in range(4))
        predicted = None if v is None else torch.full(shape, v)
        reference = _reference_step(t, t_prev, v)

        def step(x, eps, seed):
            return _call(ddpm_step, f"ddpm_step {what}", x, t, t_prev, eps, ac, predicted, generator(seed))
        a, again, b, c = step(x1, e1, 5), step(x1, e1, 5), step(x2, e2, 5), step(x1, e1, 6)
        if not isinstance(a, torch.Tensor) or a.shape != x1.shape:
            fail(f"ddpm_step returned {shape_of(a)} for x_t of shape {list(x1.shape)}")
        if torch.equal(a, c) and reference(x1, e1, 5).ne(reference(x1, e1, 6)).any():
            fail(f"{what}, the step adds no noise: a DDPM step samples the posterior (add_variance adds its noise)")
        if not torch.equal(a, again):
            fail("two steps with generators of the same seed differ: draw the step's noise from `generator`")
        got, want = a - b, reference(x1, e1, 5) - reference(x2, e2, 5)
        if not close(got, want, 1e-4):
            if close(got, scheduler([t, t - 1]).step(e1, t, x1, generator=generator(5)).prev_sample
                     - scheduler([t, t - 1]).step(e2, t, x2, generator=generator(5)).prev_sample, 1e-4):
                fail(f"{what}, the step went to t - 1: step to the previous strided timestep t_prev")
            for mean, sentence in _means(ac, t, t_prev):
                if close(got, mean(x1.double(), e1.double()) - mean(x2.double(), e2.double()), 1e-4):
                    fail(f"{what}, {sentence}")
            fail(f"{what}, the step's mean differs from diffusers' DDPMScheduler.step (the difference of two steps "
                 f"with one seed, where the noise cancels), {where(got, want)}: compare your posterior mean with "
                 f"the scheduler's")
        spread, expected = float((a - c).std()), float((reference(x1, e1, 5) - reference(x1, e1, 6)).std())
        if abs(spread / expected - 1) > 0.06:
            _name_spread(spread, expected, ac, t, t_prev, v, what)
        offset = float((a - reference(x1, e1, 5)).mean())
        if abs(offset) > 6 * expected / a.numel() ** 0.5 + 1e-4:
            fail(f"{what}, the step is off by {offset:.3g} on average from diffusers' DDPMScheduler.step: compare "
                 f"your posterior mean with the scheduler's")


def _name_spread(spread, expected, ac, t, t_prev, v, what) -> None:
    beta = 1 - ac[t].double() / ac[t_prev].double()
    beta_tilde = (1 - ac[t_prev].double()) / (1 - ac[t].double()) * beta
    std_of = {"beta": float(beta.sqrt()), "tilde": float(beta_tilde.sqrt())}
    plain = expected / 2 ** 0.5   # the reference's standard deviation per draw
    if v is not None and abs(spread / (std_of["tilde"] * 2 ** 0.5) - 1) < 0.06:
        fail(f"{what}, the step ignores the predicted variance: pass it on to add_variance")
    if v is None and abs(spread / (std_of["beta"] * 2 ** 0.5) - 1) < 0.06:
        fail(f"{what}, the step's noise uses beta as its variance instead of the posterior variance beta_tilde")
    if abs(spread / (plain ** 2 * 2 ** 0.5) - 1) < 0.06:
        fail(f"{what}, the step's noise is scaled by the variance itself: scale it by the standard deviation")
    fail(f"{what}, the step's noise has standard deviation {spread / 2 ** 0.5:.4g}, diffusers' DDPMScheduler.step "
         f"{plain:.4g}: compare the variance you add with the scheduler's")


# ---- 4.4 ------------------------------------------------------------------------------------------------------
def _recording(c, ac, calls, predicted=None):
    exact = oracle(c, ac)

    def estimate(x, t):
        calls.append((int(t), x.clone()))
        eps, _ = exact(x, int(t))
        return eps, None if predicted is None else torch.full_like(x, predicted)
    return estimate


def _trajectory(result, what: str, length: int, start, end):
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        fail(f"with return_trajectory=True ({what}) return the pair (x, trajectory), not {shape_of(result)}")
    out, trajectory = result
    try:
        entries = len(trajectory)
    except TypeError:
        fail(f"the trajectory ({what}) is {shape_of(trajectory)}: return a list of the visited x's")
    if entries != length:
        fail(f"the trajectory ({what}) has {entries} entries, not one per visited timestep ({length}, the start "
             f"included)")
    if not torch.equal(trajectory[0], start):
        fail(f"the trajectory's first entry ({what}) is not the x it started from")
    if not torch.equal(trajectory[-1], end):
        fail(f"the trajectory's last entry ({what}) is not the x it returns")
    return out


def _asked(asked: list, timesteps: list, i_start: int, what: str) -> None:
    want = timesteps[i_start:-1]
    if asked == want:
        return
    named = ((timesteps[i_start + 1:-1], "it starts one step late: the first step starts at timesteps[i_start]"),
             (timesteps[:-1], "it ignores i_start and starts at timesteps[0]"),
             (timesteps[i_start:-2], "it stops one step early: the last step goes to timesteps[-1]"),
             (timesteps[i_start:], "it asks for an estimate at timesteps[-1] too, where no step starts"))
    for steps, sentence in named:
        if asked == steps:
            fail(f"{what}, {sentence}")
    fail(f"{what}, the estimate was asked at {asked[:3]} ... {asked[-2:]}, not at timesteps[i_start:-1] = "
         f"{want[:3]} ... {want[-2:]}")


@grades("4.4")
def iterative_denoise(iterative_denoise):
    """DDPM steps from timesteps[i_start] to timesteps[-1] on the strided and on a coarser schedule: the
    estimate asked at each visited timestep but the last, after_step(x, t') editing each result (the next step
    starts from the edit), the estimate's predicted variance and the generator passed on, the trajectory; the
    exact estimate of a one-point data set lands on it."""
    ac = scheduler().alphas_cumprod
    for timesteps, i_start, name in ((STRIDED, 10, "the strided schedule"), (COARSE, 2, "the coarse schedule"),
                                     (STRIDED, 0, "the strided schedule")):
        what = f"from i_start = {i_start} on {name}"
        c = torch.rand(2, 1, 4, 6, generator=generator(80 + i_start)) * 2 - 1
        t0 = timesteps[i_start]
        x = ac[t0].sqrt() * c + (1 - ac[t0]).sqrt() * torch.randn(c.shape, generator=generator(81))
        calls, edits = [], []

        def after(y, t):
            edits.append(int(t))
            return y
        result = _call(iterative_denoise, f"iterative_denoise {what}", _recording(c, ac, calls), x, i_start,
                       timesteps, ac, generator(4), after, True)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            fail(f"with return_trajectory=True ({what}) return the pair (x, trajectory), not {shape_of(result)}")
        _asked([t for t, _ in calls], timesteps, i_start, what)
        if not torch.equal(calls[0][1], x):
            fail(f"{what}, the first step does not start from the given x")
        if edits != timesteps[i_start + 1:]:
            if not edits:
                fail(f"{what}, after_step is never called: call it after every step")
            if edits == timesteps[i_start:-1]:
                fail(f"{what}, after_step gets the timestep the step started from: pass it the one just reached, t'")
            fail(f"{what}, after_step was called at {edits[:3]} ..., not after every step with the timestep just "
                 f"reached ({timesteps[i_start + 1:i_start + 4]} ...)")
        out = _trajectory(result, what, len(timesteps) - i_start, x, result[0])
        if not close(out, c, 0.05):
            fail(f"{what}, denoising with the exact noise estimate of a one-point data set does not end on that "
                 f"point, {where(out, c)}")
    _edits_kept(iterative_denoise, ac)
    _variance_and_generator(iterative_denoise, ac)


def _edits_kept(iterative_denoise, ac) -> None:
    """after_step's result is what the next step starts from, what the trajectory holds, and what is returned."""
    calls, c = [], torch.zeros(1, 1, 4, 4)

    def marked(y, t):
        return torch.full_like(y, t / 1000)
    x = torch.randn(1, 1, 4, 4, generator=generator(82))
    out, trajectory = iterative_denoise(_recording(c, ac, calls), x, 2, COARSE, ac, generator(5), marked, True)
    for (t, seen) in calls[1:]:
        if not torch.equal(seen, torch.full_like(seen, t / 1000)):
            fail("the next step must start from what after_step returned, not from the step's own result")
    if not torch.equal(out, torch.full_like(out, COARSE[-1] / 1000)):
        fail("the result must be what after_step returned after the last step")
    if any(not torch.equal(entry, torch.full_like(entry, t / 1000)) for entry, t in zip(trajectory[1:], COARSE[3:])):
        fail("the trajectory must hold each step's x after after_step edited it")
    plain = iterative_denoise(_recording(c, ac, []), x, 2, COARSE, ac, generator(5))
    if not isinstance(plain, torch.Tensor):
        fail(f"with return_trajectory=False return x alone, not {shape_of(plain)}")


def _variance_and_generator(iterative_denoise, ac) -> None:
    """The last strided step (30 -> 0): a predicted v = 1 (variance beta) spreads ~10 times wider than v = -1
    (beta_tilde) when the estimate's variance reaches the step; one seed gives one result."""
    c, x = torch.zeros(1, 1, 16, 16), torch.randn(1, 1, 16, 16, generator=generator(83)) * 0.1
    last = len(STRIDED) - 2

    def run(v, seed):
        return iterative_denoise(_recording(c, ac, [], v), x, last, STRIDED, ac, generator(seed))
    wide, narrow = run(1.0, 7), run(-1.0, 7)
    if not torch.equal(wide, run(1.0, 7)):
        fail("two runs with generators of the same seed differ: pass the generator on to every DDPM step")
    ratio = float((wide - run(1.0, 8)).std() / (narrow - run(-1.0, 8)).std())
    expected = float(((1 - ac[30] / ac[0]) / ((1 - ac[0]) / (1 - ac[30]) * (1 - ac[30] / ac[0]))).sqrt())
    if abs(ratio / expected - 1) > 0.3:
        fail(f"at t = 30 -> 0 a predicted variance of v = 1 spreads the step {ratio:.1f} times as wide as v = -1, "
             f"not {expected:.0f} times: pass the estimate's predicted variance on to the DDPM step")


# ---- 4.5 ------------------------------------------------------------------------------------------------------
def _start_level(x: torch.Tensor, image: torch.Tensor) -> tuple[float, float]:
    """(slope, noise): x = slope * image + noise, by least squares over the pixels."""
    centred = image - image.mean()
    slope = float((centred * (x - x.mean())).sum() / centred.pow(2).sum())
    return slope, float((x - slope * image).std())


@grades("4.5")
def sdedit(sdedit):
    """SDEdit noises the image to timesteps[i_start] with the forward process, then denoises from there; with the
    image's own exact noise estimate it returns the image; i_start 1, 5, 10, 20 on the strided schedule and 3 on
    a coarser one, images in [-1, 1] and in [0, 1]."""
    ac = scheduler().alphas_cumprod
    points = ((STRIDED, 1), (STRIDED, 5), (STRIDED, 10), (STRIDED, 20), (COARSE, 3))
    for k, (timesteps, i_start) in enumerate(points):
        image = torch.rand(1, 3, 48, 48, generator=generator(90 + k))
        image = image * 2 - 1 if k % 2 == 0 else image
        what = f"at i_start = {i_start}" + (" on a coarser schedule" if timesteps is COARSE else "")
        calls = []
        out = _call(sdedit, f"sdedit {what}", _recording(image, ac, calls), image, i_start, timesteps, ac,
                    generator(5))
        if not calls:
            fail(f"{what}, the noise estimate is never asked: denoise the noised image")
        t, x = calls[0]
        if t != timesteps[i_start]:
            if t == timesteps[0]:
                fail(f"{what}, the first step is at timesteps[0] = {t}: SDEdit starts at timesteps[i_start]")
            fail(f"{what}, the first step is at t = {t}, not at timesteps[i_start] = {timesteps[i_start]}")
        slope, noise = _start_level(x, image)
        want = (float(ac[t].sqrt()), float((1 - ac[t]).sqrt()))
        if abs(slope - want[0]) > 0.2 or abs(noise / want[1] - 1) > 0.1:
            index = (float(ac[i_start].sqrt()), float((1 - ac[i_start]).sqrt()))
            if abs(slope - index[0]) < 0.2 and abs(noise / index[1] - 1) < 0.1:
                fail(f"{what}, the image is noised to t = i_start = {i_start}, an index: noise it to the timestep "
                     f"timesteps[i_start] = {t}")
            if noise < 0.01 and abs(slope - 1) < 0.05:
                fail(f"{what}, the image goes into denoising as it is: noise it with the forward process first")
            top = timesteps[0]
            if abs(slope - float(ac[top].sqrt())) < 0.2 and abs(noise / float((1 - ac[top]).sqrt()) - 1) < 0.1:
                fail(f"{what}, the image is noised to timesteps[0] = {top} instead of timesteps[i_start] = {t}")
            if abs(slope - 1) < 0.2 and abs(noise / want[1] - 1) < 0.1:
                fail(f"{what}, the noise is added without scaling the image down as the forward process does")
            fail(f"{what}, the denoising starts from {slope:.2f} x image + noise of standard deviation {noise:.2f}, "
                 f"not from the image noised to t = {t} by the forward process ({want[0]:.2f} x image + noise of "
                 f"{want[1]:.2f})")
        if not close(out, image, 0.05):
            fail(f"{what}, SDEdit of an image with its own exact noise estimate does not return the image, "
                 f"{where(out, image)}")
    again = [sdedit(_recording(image, ac, []), image, 3, COARSE, ac, generator(s)) for s in (6, 6)]
    if not torch.equal(*again):
        fail("two runs with generators of the same seed differ: draw the forward noise from `generator` too")


# ---- 4.6 ------------------------------------------------------------------------------------------------------
def _masks():
    """(what, timesteps, image, painted, mask, known, paint) at two operating points."""
    half = torch.zeros(32, 48)
    half[:, 24:] = 1
    image = torch.rand(1, 3, 32, 48, generator=generator(100)) * 2 - 1
    painted = torch.rand(1, 3, 32, 48, generator=generator(101)) * 2 - 1
    yield ("a [H, W] mask of the right half, colour images in [-1, 1]", STRIDED, image, painted, half,
           (half == 0).expand_as(image), (half == 1).expand_as(image))
    square = torch.zeros(1, 48, 48, dtype=torch.bool)
    square[:, 16:32, 16:32] = True
    image = (torch.rand(2, 1, 48, 48, generator=generator(102)) > 0.5) * 0.8 + 0.2 * torch.rand(2, 1, 48, 48)
    painted = torch.rand(2, 1, 48, 48, generator=generator(103))
    yield ("a [1, H, W] bool mask of a centre square, grey images in [0, 1], a coarser schedule", COARSE, image,
           painted, square, (~square).expand_as(image), square.expand_as(image))


@grades("4.6")
def inpaint(inpaint):
    """Where mask = 0, every step is reset to the original noised to the timestep just reached; where mask = 1
    the model paints, from pure noise; the result keeps the original where mask = 0."""
    ac = scheduler().alphas_cumprod
    for what, timesteps, image, painted, mask, known, paint in _masks():
        calls = []
        result = _call(inpaint, f"inpaint with {what}", _recording(painted, ac, calls), image, mask, timesteps, ac,
                       generator(6), True)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            fail(f"with return_trajectory=True ({what}) return the pair (x, trajectory), not {shape_of(result)}")
        out = result[0]
        if not isinstance(out, torch.Tensor) or out.shape != image.shape:
            fail(f"inpaint returned {shape_of(out)} for an image of shape {list(image.shape)}")
        if float(calls[0][1][paint].std()) < 0.8:
            fail(f"with {what}, the painted region does not start from pure noise at timesteps[0]")
        _kept_levels(calls, image, painted, known, paint, timesteps, ac, what)
        if not close(out[known], image[known], 0.05):
            fail(f"with {what}, the pixels where mask = 0 do not end as the original image, "
                 f"{where(out[known], image[known])}")
        if not close(out[paint], painted[paint], 0.05):
            fail(f"with {what}, the pixels where mask = 1 must be left to the model, {where(out[paint], painted[paint])}")
    again = [inpaint(_recording(painted, ac, []), image, mask, COARSE, ac, generator(s)) for s in (7, 7)]
    if not torch.equal(*again):
        fail("two runs with generators of the same seed differ: draw every noise from `generator`")


def _forward_noised(x, image, a) -> bool:
    """Is x the image forward-noised to abar = a: sqrt(a) image + noise of standard deviation sqrt(1 - a)?"""
    slope, noise = _start_level(x, image)
    return abs(slope - float(a.sqrt())) < 0.15 and abs(noise / float((1 - a).sqrt()) - 1) < 0.15


def _kept_levels(calls, image, painted, known, paint, timesteps, ac, what) -> None:
    """At each step's start (t <= 390, where the noise levels differ), the kept pixels are the original
    forward-noised to t: sqrt(abar_t) x0 + noise of standard deviation sqrt(1 - abar_t)."""
    for t, x in calls:
        if t > 390 or _forward_noised(x[known], image[known], ac[t]):
            continue
        if _forward_noised(x[paint], image[paint], ac[t]):
            fail(f"with {what}, the pixels where mask = 1 are reset to the original and the others painted: mask = 1 "
                 f"marks what the model paints, mask = 0 what it keeps")
        if close(x[known], image[known], 1e-3):
            fail(f"with {what}, the kept pixels at t = {t} are the clean original: reset them to the original noised "
                 f"to the current timestep (forward process), not pasted clean")
        previous = timesteps[timesteps.index(t) - 1] if t in timesteps and timesteps.index(t) else None
        if previous is not None and _forward_noised(x[known], image[known], ac[previous]):
            fail(f"with {what}, the kept pixels at t = {t} carry the noise of t = {previous}, the step's start: "
                 f"reset them to the original noised to the timestep just reached")
        if _forward_noised(x[known], painted[known], ac[t]):
            fail(f"with {what}, the kept pixels at t = {t} follow the model: reset them to the original noised to t "
                 f"after every step, not only at the start")
        residual = x[known] - ac[t].sqrt() * image[known]
        fail(f"with {what}, the kept pixels at t = {t} are {float(residual.mean()):.2f} + noise of standard deviation "
             f"{float(residual.std()):.3f} away from sqrt(abar_t) x0, not noise of {float((1 - ac[t]).sqrt()):.3f}: "
             f"reset them to the original forward-noised to t after every step")


# ---- 4.7 ------------------------------------------------------------------------------------------------------
def _views():
    from helpers.diffusion import FLIP, IDENTITY, NEGATIVE, SKEW
    return IDENTITY, FLIP, SKEW, NEGATIVE


def _estimates(times):
    """Three noise estimates, none symmetric under the views, each remembering the t it was asked at."""
    return [lambda x, t: (times.append(t) or 2.0 * x + t / 1000, None),
            lambda x, t: (times.append(t) or 0.3 * x.cumsum(-1) + x ** 2, None),
            lambda x, t: (times.append(t) or torch.sin(3 * x) - t / 2000, None)]


@grades("4.7")
def anagram(anagram):
    """eps = mean_k inverse_k(eps_k(apply_k(x))): two views (flip, column roll) and three, t from 990 to 30."""
    identity, flip, skew, negative = _views()
    for t, views in ((990, [identity, flip]), (500, [identity, skew]), (30, [flip, skew, negative])):
        times = []
        estimates = _estimates(times)[:len(views)]
        x = torch.randn(2, 3, 6, 10, generator=generator(110 + t))
        what = f"at t = {t} with the views [{', '.join(view.name for view in views)}]"
        result = _call(anagram(estimates, views), f"the anagram estimate {what}", x, t)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            fail(f"the anagram's estimate must return (eps, variance), not {shape_of(result)}")
        eps, variance = result
        if any(s != t for s in times):
            fail(f"{what}, the prompts' estimates were asked at t = {sorted(set(times))}: pass t on unchanged")
        seen = [e(v.apply(x), t)[0] for e, v in zip(estimates, views)]
        want = torch.stack([v.inverse(s) for s, v in zip(seen, views)]).mean(0)
        if close(eps, want):
            if variance is not None:
                fail("with no predicted variance (None), the anagram's variance must be None too")
            continue
        k = len(views)
        named = (
            (torch.stack(seen).mean(0), "each view's estimate must be mapped back by the view's inverse before "
                                        "averaging"),
            (torch.stack([v.apply(e(v.inverse(x), t)[0]) for e, v in zip(estimates, views)]).mean(0),
             "it looks through each view's inverse and maps back by the view itself: each prompt sees "
             "view.apply(x) and its estimate goes back through view.inverse"),
            (k * want, "it adds the views' estimates: average them"),
            (k * want / 2, "it divides the sum by 2 instead of the number of views"),
            (torch.stack([views[0].inverse(e(views[0].apply(x), t)[0]) for e in estimates]).mean(0),
             "every prompt sees the first view: prompt k sees view k"),
        )
        name_the_mistake(eps, named, what)
        fail(f"{what}, the estimate differs from the average of each prompt's estimate seen through its view and "
             f"mapped back, {where(eps, want)}")


# ---- 4.8 ------------------------------------------------------------------------------------------------------
def _blur(y, kernel_size, sigma):
    return TF.gaussian_blur(y, [kernel_size, kernel_size], [sigma, sigma])


@grades("4.8")
def hybrid(hybrid):
    """eps = low_pass(eps_low) + eps_high - low_pass(eps_high), low_pass a Gaussian blur with the given kernel
    size and sigma: the course's (33, 2.0, the defaults) on 64 x 64 colour images, and (9, 1.0), (13, 3.0) on
    non-square ones; t from 990 to 30."""
    low = lambda y, t: (torch.sin(2 * y) + t / 1000, None)                 # noqa: E731
    high = lambda y, t: (y ** 2 - 0.5 * y, None)                           # noqa: E731
    points = ((None, None, (1, 3, 64, 64), 990), (9, 1.0, (2, 3, 20, 28), 500), (13, 3.0, (1, 1, 32, 48), 30))
    for kernel_size, sigma, shape, t in points:
        x = torch.randn(shape, generator=generator(120 + t))
        what = ("with the default blur (kernel 33, sigma 2)" if kernel_size is None
                else f"with kernel_size = {kernel_size}, sigma = {sigma:g}") + f" at t = {t}"
        k, s = (33, 2.0) if kernel_size is None else (kernel_size, sigma)
        estimate = hybrid(low, high) if kernel_size is None else hybrid(low, high, kernel_size, sigma)
        result = _call(estimate, f"the hybrid estimate {what}", x, t)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            fail(f"the hybrid's estimate must return (eps, variance), not {shape_of(result)}")
        eps = result[0]
        e_low, e_high = low(x, t)[0], high(x, t)[0]
        want = _blur(e_low, k, s) + e_high - _blur(e_high, k, s)
        if close(eps, want, 1e-4):
            continue
        named = (
            (_blur(e_high, k, s) + e_low - _blur(e_low, k, s), "low and high are swapped: the low-pass part comes "
                                                                "from the first estimate"),
            (_blur(e_low, k, s) + e_high, "the high-pass part must remove the high estimate's own low frequencies"),
            (e_high, "the high-pass part removes the low estimate's blur instead of the high estimate's own"),
            (e_low + e_high - _blur(e_high, k, s), "the low estimate is not blurred: keep only its low frequencies"),
            ((_blur(e_low, k, s) + e_high - _blur(e_high, k, s)) / 2, "it halves the sum: add the two parts"),
            (_blur(e_low, 33, 2.0) + e_high - _blur(e_high, 33, 2.0), "the blur ignores kernel_size and sigma and "
                                                                      "uses 33 and 2.0 always"),
        )
        name_the_mistake(eps, named, what, 1e-4)
        fail(f"{what}, the hybrid estimate differs from the blurred low estimate plus what the blur removes from "
             f"the high one, {where(eps, want)}: compare with helpers.diffusion.low_pass of each")
    x = torch.randn(1, 1, 40, 40)
    same, _ = hybrid(high, high, 9, 2.0)(x, 500)
    if not close(same, high(x, 500)[0], 1e-4):
        fail("two equal estimates must give that estimate back")
