"""Training and evaluation for Animate Anyone 2: data preparation, the paper's recipe, metrics."""
