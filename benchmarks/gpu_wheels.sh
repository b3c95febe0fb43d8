#!/bin/sh
# Wheels for `make gpu-check` on a GPU machine that has no package registry (Python 3.12, with
# torch, timm, onnx, onnxruntime, CuPy, typer, rich, networkx, pyyaml already there): what
# edgepipe needs beyond those. Run here, with network access; `make gpu-check` installs .whl/*
# there before it runs. About 2.5 MB.
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0
ls -l .whl
