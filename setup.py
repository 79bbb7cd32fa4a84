"""The one compiled piece: the engine's RK4 over dense-form layers (models/_rk4_dense.c).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
present the package installs without it and the engine runs its torch path
(``models.engine_native.available`` says which; tests/test_engine_native.py requires it).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("models._rk4_dense", ["models/_rk4_dense.c"],
                             extra_compile_args=["-O3", "-Wno-psabi"], optional=True)])
