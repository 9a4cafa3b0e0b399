"""``python3 -m edgec.testing.campaigns CAMPAIGN [options]``: see the package docstring."""

from __future__ import annotations

import argparse
import importlib
import sys

from edgec.testing.campaigns import CAMPAIGNS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgec.testing.campaigns",
                                     description="Run a robustness campaign against the CLI.")
    sub = parser.add_subparsers(dest="campaign", metavar="CAMPAIGN", required=True)
    modules = {}
    for name, module_name in CAMPAIGNS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0],
                                            description=module.__doc__))
    args = parser.parse_args(argv)
    return modules[args.campaign].run(args)


if __name__ == "__main__":
    sys.exit(main())
