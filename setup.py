"""setuptools needs this file only to hand cffi_modules to cffi."""

from setuptools import setup

setup(cffi_modules=["src/pyspdk_sys/_cffi_build.py:make_ffibuilder"])
