#!/bin/sh
# `tfs-release` in the worker image (PYTHONPATH=/opt/tfs-release).
exec python -m cli "$@"
