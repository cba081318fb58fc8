"""The networks of Animate Anyone 2 (paper sections 3.1-3.4)."""
