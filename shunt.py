#!/usr/bin/env python3
"""Entry script: ``python shunt.py <command>`` (same as the ``shunt`` console script)."""
import sys

from shunt_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
