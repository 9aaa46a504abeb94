"""Build script for cbp's compiled core.

The Cython sources live in ``src/`` and compile into one extension module
inside the ``cbp`` package (``cbp._core``): ``_core.pyx`` and the ``.pxd``
files and C headers it cimports and includes.

Environment switches
--------------------
CBP_DEBUG=1
    Build with ``boundscheck``, ``wraparound`` and ``initializedcheck`` on
    (and no ``-O3``), so a kernel indexing bug raises instead of corrupting
    memory. The test suite is run under this build in CI (``.ci/run``);
    ``cbp._core.safety_checks()`` tells which build is installed.
    The two variants generate their C into separate folders under
    ``build/`` and every build recompiles (setuptools compares file
    times only, not directives or flags), so switching the variable
    never reuses the other variant's code.
CBP_NO_OPENMP=1
    Build without OpenMP even when the compiler supports it.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CBP_DEBUG", "0") not in ("", "0")


def _env_flags(*names):
    """The whitespace-separated flags of the environment variables ``names``."""
    return [flag for name in names for flag in os.environ.get(name, "").split()]


def _openmp_flags():
    """Return ``(compile_args, link_args)`` for OpenMP, or None without it.

    gcc and LLVM clang take ``-fopenmp``. Apple's clang has no OpenMP of
    its own: with Homebrew's libomp the flags come from the environment
    (``CFLAGS="-Xpreprocessor -fopenmp -I$(brew --prefix libomp)/include"``,
    ``LDFLAGS="-L$(brew --prefix libomp)/lib -lomp"``, as the cibuildwheel
    configuration in ``pyproject.toml`` sets them), and none are added here.
    Either way a small program using ``omp.h`` must compile and link with
    the environment's ``CFLAGS``/``CPPFLAGS``/``LDFLAGS``; otherwise the core
    is built serially.
    """
    if os.environ.get("CBP_NO_OPENMP", "0") not in ("", "0"):
        return None
    if sys.platform == "win32":
        return None
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        return None
    env_cflags = _env_flags("CPPFLAGS", "CFLAGS")
    env_ldflags = _env_flags("LDFLAGS")
    if sys.platform == "darwin" and "-fopenmp" in env_cflags:
        flags = ([], [])  # -Xpreprocessor -fopenmp ... -lomp from the environment
    else:
        flags = (["-fopenmp"], ["-fopenmp"])
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        cmd = cc + env_cflags + flags[0] + [path, "-o", os.path.join(tmp, "t")]
        cmd += env_ldflags + flags[1]
        try:
            result = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    return flags if result.returncode == 0 else None


OPENMP_FLAGS = _openmp_flags()
OPENMP = OPENMP_FLAGS is not None

# -fno-math-errno lets gcc vectorise sqrt/exp loops (no errno side effect);
# -fno-trapping-math lets it turn selects into vector blends (no value changes:
# the package reads no floating-point exception flags)
compile_args = (
    ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
)
link_args = []
if OPENMP:
    compile_args += OPENMP_FLAGS[0]
    link_args += OPENMP_FLAGS[1]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

# The core is one extension: _core.pyx cimports the .pxd files of src/
# (cdef inline functions, structs, enums), includes _network.pxi (its
# classes) and they include the headers, so all of it compiles into one C
# file. Editing any of them rebuilds it.
extensions = [
    Extension(
        "cbp._core",
        ["src/_core.pyx"],
        depends=sorted(glob.glob("src/*.pxd") + glob.glob("src/*.pxi")
                       + glob.glob("src/*.h")),
        include_dirs=[np.get_include(), "src"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

print(f"cbp build: openmp={OPENMP} debug={DEBUG}")
setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives=directives,
        build_dir=os.path.join("build", "cython-debug" if DEBUG else "cython"),
    ),
    options={"build_ext": {"force": True}},
)
