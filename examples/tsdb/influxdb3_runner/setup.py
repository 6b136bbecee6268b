"""The build of the influxdb3-runner package: setuptools, with tsdb's gRPC stubs
generated at build time (never committed) and every build file outside this directory,
both by the Python SDK's stubgen.py (see generate.py). The metadata is in pyproject.toml."""

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent

# By path: a PEP 517 backend does not promise this directory is on sys.path.
_spec = importlib.util.spec_from_file_location("influxdb3_runner_generate", HERE / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
gen.stubgen().setup(HERE, "influxdb3_runner", gen.PROTOS, gen.ROOTS)
