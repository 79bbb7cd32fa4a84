"""The one compiled piece: the engine's RK4 over dense- and gather-form layers (``models._rk4``,
sources ``models/_rk4_*.c``).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
present the package installs without it and the engine runs its torch path
(``models.engine_native.available`` says which; tests/test_engine_native.py requires it).
"""
from setuptools import Extension, setup

SOURCES = ["models/_rk4_module.c", "models/_rk4_dense.c", "models/_rk4_gather.c"]

setup(ext_modules=[Extension("models._rk4", SOURCES, depends=["models/_rk4.h"],
                             extra_compile_args=["-O3", "-Wno-psabi"], optional=True)])
