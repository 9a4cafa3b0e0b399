"""An example edgec backend plugin distribution, used by edgec's tests and as a template."""
