"""Training: splits, encoders, candidate models, tuning, ensembles, threshold and calibration."""
