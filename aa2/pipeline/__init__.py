"""Inference: from a reference image and driving inputs to frames (paper section 3, inference)."""
