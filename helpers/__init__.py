"""The course's kernels: what a student reads and writes. Each exercise, its file, and where the notebook uses it:

| exercise | what you write                           | file                          | notebook, section                     |
|----------|------------------------------------------|-------------------------------|---------------------------------------|
| 1.1      | noising z = x + sigma eps                | denoise.py `add_noise`        | 01 · 1 The noising process            |
| 1.2      | Conv, DownConv, UpConv                   | course_unet.py                | 01 · 2 Training the sigma = 0.5 denoiser |
| 1.3      | Flatten, Unflatten, Concat               | course_unet.py `CourseUNet`   | 01 · 2 Training the sigma = 0.5 denoiser |
| 2.1      | time conditioning by FCBlocks            | course_unet.py `ConditionalCourseUNet` | 02 · 2 Two time-conditioned UNets |
| 2.2      | the flow-matching loss                   | flow_matching.py `loss`       | 02 · 2 Two time-conditioned UNets      |
| 2.3      | the Euler step x <- x - v / T            | samplers.py `euler_step`      | 02 · 3 Samples after epochs 1, 5, 10   |
| 3.1      | class conditioning by FCBlocks           | course_unet.py `ConditionalCourseUNet` | 03 · 1 The class-conditioned course UNet |
| 3.2      | classifier-free guidance                 | guidance.py `classifier_free` | 03 · 2 Samples at gamma = 5            |
| 4.1      | the DDPM forward process                 | diffusion.py `forward`        | 04 · 1 The forward process             |
| 4.2      | the one-step estimate of x0              | diffusion.py `estimate_x0`    | 04 · 2 Classical against one-step denoising |
| 4.3, 4.4 | the DDPM posterior step, iterative denoising | diffusion.py `ddpm_step`, `iterative_denoise` | 04 · 3 Iterative denoising |
| 4.5      | SDEdit                                   | diffusion.py `sdedit`         | 04 · 5 SDEdit                          |
| 4.6      | inpainting                               | diffusion.py `inpaint`        | 04 · 6 Inpainting                      |
| 4.7      | visual anagrams                          | diffusion.py `anagram`        | 04 · 8 Visual anagrams                 |
| 4.8      | hybrid images                            | diffusion.py `hybrid`         | 04 · 9 Hybrid images                   |
| 5.1, 5.2 | the IS and ELS machines                  | ideal.py `ideal_denoiser`, `els_denoiser` | 05 · 4 UNets and machines from the same noises |

The other kernels here: attention_unet.py (the homework's ResBlock + AttnBlock UNet), exercises.py (this table
as data, and what an unfinished exercise says) and checks/ (the check each exercise's cell runs:
``checks.add_noise(denoise.add_noise)``). Supporting code sits in folders named for where it stands:
foundation/ below the kernels (data, images, checkpoint files, device and seeding, input checks), training/
above them (profiles, run folders, the training loop), measure/ (classifier metrics and their cache),
display/ (figures and sliders), backends/ (DeepFloyd IF and the offline stand-in of notebook 04).
The instructor's tools are not part of this package.
"""
