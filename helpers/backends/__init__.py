"""Part A's back-ends for notebook 04: DeepFloyd IF through diffusers (`deepfloyd`), a tiny random IF for
tests (`tiny_deepfloyd`), and the offline project backend, a class-conditioned flow model of digits and
garments (`standin`) read as a DDPM noise predictor (`flow_backend`)."""
