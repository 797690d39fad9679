"""Torch networks and per-request pipeline logic that the Triton models in model_repository/ wrap."""
