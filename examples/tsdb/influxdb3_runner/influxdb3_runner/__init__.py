"""Runs an InfluxDB 3 processing-engine plugin unchanged as a tsdb trigger on baton:

    python -m influxdb3_runner PLUGIN.py      # or a package directory

The plugin gets InfluxDB's API (`influxdb3_runner.local`, `LineBuilder` in builtins)
and its entry points are called with InfluxDB's arguments; tsdb starts this for any
trigger whose file defines `process_writes`, `process_scheduled_call` or
`process_request`.
"""

from .cache import CacheStore, PluginCache
from .line_builder import InfluxDBError, InvalidKeyError, InvalidLineError, InvalidMeasurementError, LineBuilder
from .local import InfluxDB3Local, QueryError, WriteError

__version__ = "0.1.0"

__all__ = [
    "CacheStore",
    "InfluxDB3Local",
    "InfluxDBError",
    "InvalidKeyError",
    "InvalidLineError",
    "InvalidMeasurementError",
    "LineBuilder",
    "PluginCache",
    "QueryError",
    "WriteError",
]
