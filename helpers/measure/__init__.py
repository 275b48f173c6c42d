"""Measuring models: a run's sample quality in one call (`quality.of_run`), the classifier's accuracy and
Frechet distance it is built on (`metrics`), measurements kept beside their checkpoint (`cache`), and the ideal
machines' locality calibration (`locality`)."""
