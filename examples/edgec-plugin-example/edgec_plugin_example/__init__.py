"""An example edgec plugin distribution, used by edgec's tests and as a template."""
