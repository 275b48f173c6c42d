"""The exercises' checks: a student runs ``checks.<name>(their_function)`` in the cell after each exercise.

A check compares behaviour, never the reference source: a brute force, an independent formula,
diffusers' DDPMScheduler, or shapes and invariants. It prints one line when everything holds, and
otherwise raises `CheckFailed` with one sentence naming what is wrong (not the solution). The checks
live by topic in this package's modules; `helpers.exercises.EXERCISES` says which check grades which exercise.
"""
from helpers.checks.denoising import add_noise
from helpers.checks.diffusion import (
                                      anagram,
                                      ddpm_step,
                                      forward_process,
                                      hybrid,
                                      inpaint,
                                      iterative_denoise,
                                      one_step_estimate,
                                      sdedit,
)
from helpers.checks.flow import classifier_free_guidance, euler_step, flow_matching_loss
from helpers.checks.ideal import els_denoiser, ideal_denoiser
from helpers.checks.unet import class_conditioning, course_unet, time_conditioning, unet_operations
from helpers.exercises import CheckFailed

__all__ = ["add_noise", "unet_operations", "course_unet", "time_conditioning", "flow_matching_loss", "euler_step",
           "class_conditioning", "classifier_free_guidance", "forward_process", "one_step_estimate", "ddpm_step",
           "iterative_denoise", "sdedit", "inpaint", "anagram", "hybrid", "ideal_denoiser", "els_denoiser",
           "CheckFailed"]
