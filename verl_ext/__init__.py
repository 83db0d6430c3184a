"""Library half of the SENT implementation: pure torch / Python math, no Ray, Hydra or verl inside."""
