"""Inference: the Predictor (pre/postprocessing) over a backend that runs the network."""
