"""The compiled part of mailyard: the log tools' counting core (src/mailyard/logtools/_fastcount.c).

Everything else is in pyproject.toml.  The extension is optional: without a C compiler and the
Python headers the install still succeeds and the log tools use their pure-Python reader.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mailyard.logtools._fastcount",
            ["src/mailyard/logtools/_fastcount.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
