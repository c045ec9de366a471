"""Builds the optional C accelerator (``acmenfs.nfs3._readaccel``); everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python's headers the install goes on without it and
the pure-Python path (``acmenfs.nfs3.fastpath``) answers every READ.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("acmenfs.nfs3._readaccel", ["acmenfs/nfs3/_readaccel.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"],
                             optional=True)])
