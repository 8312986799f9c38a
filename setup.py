"""Only the C extension lives here (setuptools' stable way to declare one); everything else
about the package is in pyproject.toml."""

from setuptools import Extension, setup

# The bus's message reader (bus/sockio.py falls back to pure Python where it cannot be built).
setup(ext_modules=[Extension("bus._frames", sources=["bus/_frames.c"], extra_compile_args=["-O2"])])
