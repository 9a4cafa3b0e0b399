"""Copies ../edgec_runtime (the package the compiler also ships) into this project folder
before setuptools collects it, so `pip install ./runtime` and `python -m build runtime`
work from a checkout. An sdist carries the copy."""

import os
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, os.pardir, "edgec_runtime")
COPY = os.path.join(HERE, "edgec_runtime")

if os.path.isfile(os.path.join(SOURCE, "__init__.py")):
    shutil.rmtree(COPY, ignore_errors=True)
    shutil.copytree(SOURCE, COPY, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

setup()
