"""Conditioning inputs: shape-agnostic masks, environment, objects, skeleton and depth."""
