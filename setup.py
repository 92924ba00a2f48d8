"""Compiles the flow network (palmsim/engine/flownet.py) with Cython; pyproject.toml holds the
rest of the package's metadata. The extension is optional: without a C compiler the install
goes on and palmsim runs flownet.py itself (palmsim/engine/flows.py picks)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "palmsim.engine.flownet_c",
                ["palmsim/engine/flownet.py"],  # typed by palmsim/engine/flownet_c.pxd
                # a * b + c stays two roundings, as in Python: no fused multiply-add where the
                # target has one (GCC contracts by default, "-ffp-contract" in its manual)
                extra_compile_args=["-ffp-contract=off"],
                optional=True,
            )
        ],
        # infer_types: C integers for counters such as the flush stamp (no overflow at 2**63)
        compiler_directives={"language_level": 3, "infer_types": True},
    )
)
