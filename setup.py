"""Build daskray's compiled graph core (``src/_graph/_core.pyx`` -> ``daskray._graph._core``).

Cython directives live here, once. Environment switches:

* ``DASKRAY_CYTHON_DEBUG=1``    bounds and wraparound checks on (a debug build);
* ``DASKRAY_CYTHON_TRACE=1``    line tracing, for coverage of the compiled code;
* ``DASKRAY_CYTHON_ANNOTATE=1`` write ``_core.html`` (``cython -a``) beside the source.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup


def _on(name):
    return os.environ.get(name, "") not in ("", "0")


debug = _on("DASKRAY_CYTHON_DEBUG")
trace = _on("DASKRAY_CYTHON_TRACE")

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "embedsignature": False,  # docstrings equal the twin's; binding gives signatures
    "linetrace": trace,
    "binding": True,
}
macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []

extensions = [
    Extension(
        "daskray._graph._core",
        ["src/_graph/_core.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2"] if not debug else ["-O0", "-g"],
    )
]

setup(
    package_dir={"daskray": "src/daskray", "daskray._graph": "src/_graph"},
    packages=["daskray", "daskray._graph"],
    package_data={"daskray._graph": ["*.pyx", "*.pxd", "*.pxi", "*.pyi", "py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=_on("DASKRAY_CYTHON_ANNOTATE"),
    ),
)
