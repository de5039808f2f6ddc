"""Trained models shipped with cnnx, one .npz file each (weights and metadata); see cnnx.sources.model."""
