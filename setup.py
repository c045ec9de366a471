"""Builds the optional C accelerators (``acmenfs.nfs3._readaccel``, ``acmenfs.nfs3._writeaccel``);
everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python's headers the install goes on without them and
the pure-Python path (``acmenfs.nfs3.fastpath``) answers every READ and WRITE.
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def _accelerator(name: str) -> Extension:
    return Extension(f"acmenfs.nfs3.{name}", [f"acmenfs/nfs3/{name}.c"], depends=["acmenfs/nfs3/_accel.h"],
                     extra_compile_args=_FLAGS, optional=True)


setup(ext_modules=[_accelerator("_readaccel"), _accelerator("_writeaccel")])
