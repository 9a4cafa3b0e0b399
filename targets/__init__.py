"""Built-in target descriptions: one ``.edge`` file per target, in the spec language."""
