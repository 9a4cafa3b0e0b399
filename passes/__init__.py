"""Built-in passes: each module is one pass, registered under the ``edgec.passes`` entry-point group
(pyproject.toml) like any plugin."""
