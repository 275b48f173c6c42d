"""Measuring models: the classifier's accuracy and Frechet distance (`metrics`), measurements cached beside
their checkpoint (`cache`), and the ideal machines' locality calibration (`locality`)."""
