"""The build of the baton-plugin package: setuptools, with the gRPC stubs generated from
the baton protos at build time (see README.md, "Installing", for why they are not
committed) and every build file outside this directory; stubgen.py does both. The
metadata is in pyproject.toml."""

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent

# By path: a PEP 517 backend does not promise this directory is on sys.path.
_spec = importlib.util.spec_from_file_location("baton_plugin_generate", HERE / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
gen.stubgen().setup(HERE, "baton_plugin", gen.PROTOS, gen.ROOTS)
